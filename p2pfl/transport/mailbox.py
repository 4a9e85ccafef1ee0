"""Round-keyed collection of messages with time-outs.

Peers run at their own pace: a fast neighbour's message for round r+1 may
arrive while this node still collects round r.  The mailbox keeps such early
messages (within a bounded window of rounds), drops stale ones, and sets
control messages (``stop``, ``heartbeat``, ...) aside for the actor.  A silent
peer never blocks a collection beyond its time-out.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Callable, Iterable

from .endpoint import COMMAND_KINDS, Endpoint
from .routing import DATA_KINDS, Refused, Routing
from .wire import Message

__all__ = ["Mailbox", "DATA_KINDS", "NODE_REPORTS", "Refused"]

#: At most this many queued messages are read before a wait starts.
MAX_DRAIN = 10_000
#: Commands a node keeps until it reads them: a launcher sends it one config and one
#: start, so more can only be a flood.
MAX_CONTROL = 64
#: What the launcher's own mailbox takes as control: the nodes' reports.
NODE_REPORTS = frozenset({"join", "ready", "metrics", "bye", "error", "weights"})


#: The most (kind, round, sender) drops beyond the window a mailbox remembers (they are
#: not waited for); a flood of far-future rounds costs no more memory than this.
MAX_DROPPED_AHEAD = 4096


class Mailbox(Routing):
    """Collects one round's data messages from a set of peers.

    Parameters
    ----------
    endpoint : Endpoint
        The actor's endpoint (owned by the same thread).
    window : int
        How many rounds ahead of the current one are buffered; later ones are
        dropped and counted, so a hostile peer cannot grow memory.
    alive : callable, optional
        Checked about once a second while waiting; returning False stops the
        actor (used to notice a lost launcher).
    gate : CpuGate, optional
        The host's CPU gate, held by this actor except while it waits.
    control_kinds, max_control
        The kinds taken as control messages from ``control_sources`` (a node: the
        launcher's commands; the launcher: :data:`NODE_REPORTS`), and how many of
        them are kept unread (None: no bound, for the launcher).  Any other kind
        that is not data is dropped (``unexpected_kind``).

    ``on_tick``, if set, is called about once a second while waiting (with the
    liveness check): the runtime sends its held records then.
    """

    def __init__(self, endpoint: Endpoint, *, window: int = 4,
                 alive: Callable[[], bool] | None = None,
                 peers: Iterable | None = None, control_sources: Iterable = (),
                 max_unconfigured: int = 4096, gate=None,
                 control_kinds=COMMAND_KINDS, max_control: int | None = MAX_CONTROL) -> None:
        self.endpoint = endpoint
        self.gate = gate  # the host's CpuGate when actors share a process (cpugate.py)
        self.window = window
        # Whether a data message of (src, kind, round) may come at all (a time-varying
        # topology's phases: a neighbour sends to us only in its rounds); None: any.
        self.admits: Callable[[object, str, int], bool] | None = None
        self.alive = alive or (lambda: True)
        # Who may send data messages.  None until the node is configured: then data
        # messages are kept (at most max_unconfigured of them) and filtered later,
        # since a neighbour may say hello before our own configuration arrives.
        self.peers = None if peers is None else set(peers)
        self.max_unconfigured = max_unconfigured
        self._unconfigured = 0
        self.control_sources = set(control_sources)  # who may send control messages
        self.control_kinds = frozenset(control_kinds)  # and of which kinds
        self.current_round = 0
        self.stopped = False
        self.finish = False  # asked to end the run after the current round (a coordinator)
        # this process's routing id towards the launcher: a refusal names the process it
        # is for, and another's is dropped (one sent to our address by mistake, or a trick)
        self.own_route: bytes | None = None
        self.last_control = time.monotonic()  # when a control source last spoke
        # commands a node has not read yet (config, start): a flood's oldest give way
        self.control: deque[Message] = deque(maxlen=max_control)
        self._pending: dict = defaultdict(dict)  # (kind, round) -> {src: Message}
        # (kind, round) -> senders whose message of that round was dropped beyond the
        # window: it is not coming again (a peer's messages arrive in order), so it is not
        # waited for; at most MAX_DROPPED_AHEAD are remembered (a hostile peer's flood)
        self._ahead: dict = defaultdict(set)
        self._ahead_count = 0
        # while catching up (answers): the round beyond which a peer's messages are
        # kept only up to MAX_KEPT_AHEAD of each kind (routing.py); None otherwise
        self.capped_beyond: int | None = None
        self._requests: dict = defaultdict(dict)  # kind -> {src: Message}
        self.last_heard: dict = {}  # peer -> latest round of any data message (late ones too)
        # Without a round barrier (asynchronous gossip) data messages queue per sender
        # and kind, whatever their round, at most max_queued each (the oldest go first).
        self.asynchronous = False
        self.max_queued = 64
        self._queues: dict = defaultdict(deque)  # (kind, src) -> deque of Message
        self._next_check = time.monotonic() + 1.0
        self.lost = False  # the liveness check failed (the launcher, or the host, is gone)
        self.on_tick: Callable[[], None] | None = None
        # told of each control message dropped for its unknown sender (the launcher
        # says whose join it dropped)
        self.on_stranger: Callable[[Message], None] | None = None
        # Availability: peers that said they left (not waited for until they send data
        # again), and whether this node is offline itself (it then hears nothing).
        self.away: set = set()
        self.left_at: dict = {}  # peer -> when (monotonic) its latest leave came
        self.rejoined_at: dict = {}  # peer -> when (monotonic) the launcher said it is back
        # peers whose latest message asked to be caught up (a pull): they send nothing
        # before an answer, which a gossip node gives with its next round's messages,
        # so its waits do not wait for them (wait_for_pullers False); a coordinator's
        # next instruction is its answer, and it waits for the reply
        self.pulling: set = set()
        self.wait_for_pullers = True
        self.done: set = set()
        self.gone: set = set()  # dead, the launcher said: away until restarted
        self.offline = False
        self.cut = False  # the launcher's stop came mid-run (interrupted, or it failed)

    def _wait(self, ready: Callable[[], bool], timeout: float, wall: bool = False) -> None:
        """Receive and route messages until ``ready()``, a stop, or ``timeout`` seconds.

        What has already arrived is read first, even when ``ready()`` holds from the
        start: a node that waits for nobody must still hear its peers (or it would
        never notice that a silent one speaks again).  The liveness check runs about
        once a second; failing it stops the actor.

        With a host :class:`~p2pfl.transport.cpugate.CpuGate`, the actor gives up
        its turn on the CPU while it waits, and ``timeout`` counts the host's idle
        seconds, not wall seconds (``wall``: wall seconds, for emulated pauses; an
        asynchronous actor's waits count wall seconds too).
        """
        self._read_all()
        if self.stopped or ready() or not self._still_alive():
            return
        gate = self.gate
        # the host's idle clock stands still while any actor computes, and asynchronous
        # actors never block: their waits count wall seconds
        idle = gate is not None and not wall and not self.asynchronous
        clock = gate.idle_clock if idle else time.monotonic
        deadline = clock() + timeout
        exits = self.endpoint.inbox.exits  # a watched process that ends ends the wait
        while not self.stopped and not ready():
            left = deadline - clock()
            if left <= 0 or not self._still_alive():
                return
            until_check = max(0.0, self._next_check - time.monotonic())
            if gate is None:
                msg = self.endpoint.recv(min(left, until_check))
                if msg is not None:
                    self._route(msg)
                elif self.endpoint.inbox.exits != exits:
                    return
                continue
            # Sleep off the gate; once there is news, read all of it in our turn.
            gate.release()
            try:
                news = self.endpoint.wait(min(left, until_check))
            finally:
                gate.acquire()
            if news:
                self._read_all()

    def _still_alive(self) -> bool:
        """The liveness check and ``on_tick``, at most once a second however short the
        waits (a node whose rounds never wait long must still notice a lost launcher).
        A failed check stops the actor and sets :attr:`lost`."""
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + 1.0
        if not self.alive():
            self.stopped = self.lost = True
            return False
        if self.on_tick is not None:
            self.on_tick()
        return True

    def _read_all(self) -> None:
        for _ in range(MAX_DRAIN):
            msg = self.endpoint.recv(0)
            if msg is None:
                break
            self._route(msg)

    def take_turns(self) -> None:
        """Let the other actors of this host compute before we go on (no waiting
        otherwise: for actors that never block, such as asynchronous gossip)."""
        if self.gate is not None:
            self.gate.release()
            self.gate.acquire()

    def collect(self, kind: str, round: int, expected: Iterable, timeout: float,
                rejoined_since: float | None = None) -> dict:
        """Wait until every ``expected`` peer's ``kind`` message for ``round`` arrived
        (or, with ``rejoined_since``, a monotonic time, until one of those still awaited
        rejoins after it: restarted, it never got what it would answer).

        Returns ``{src: Message}`` for what arrived before ``timeout`` seconds
        passed, including messages from peers that were not waited for.
        """
        self.current_round = round
        expected = set(expected)
        self._drop_stale()
        self._drop_strangers()
        slot = self._pending[(kind, round)]
        # Not waited for any more: a peer that says it left, one already heard from
        # for a later round (a peer's messages arrive in order, so this round's is
        # not coming: it was lost, or dropped while we were away), one back from away
        # or restarted that asked to be caught up (see ``pulling``), and one whose
        # message of this round came too early and was dropped beyond the window.
        pullers = set() if self.wait_for_pullers else self.pulling

        def done() -> bool:
            gone_ahead = self._ahead.get((kind, round), ())  # dropped beyond the window
            if rejoined_since is not None and any(
                    self.rejoined_at.get(j, -1.0) >= rejoined_since
                    for j in expected if j not in slot):
                return True
            return all(j in slot or j in self.away or self.last_heard.get(j, -1) > round
                       or j in pullers or j in gone_ahead for j in expected)

        self._wait(done, timeout)
        return self._pending.pop((kind, round), {})

    def next_after(self, kind: str, after: int, src, timeout: float) -> Message | None:
        """``src``'s ``kind`` message for the earliest round later than ``after``.

        For peers that do not hear from each other every round (a worker the
        coordinator leaves out); that round becomes the current one.  None on
        timeout or stop.
        """
        def earliest():
            rounds = [r for (k, r), slot in self._pending.items()
                      if k == kind and r > after and src in slot]
            return min(rounds, default=None)

        self._wait(lambda: earliest() is not None, timeout)
        rnd = earliest()
        return None if rnd is None else self.collect(kind, rnd, [src], 0.0)[src]

    def go_asynchronous(self) -> None:
        """Stop keying data by round: from now on :meth:`drain` takes what arrived.
        What strangers sent before the peers were known is dropped first (a restarted
        node may hear from anyone before its config): the queues hold peers' alone."""
        self._drop_strangers()
        self.asynchronous = True
        for (kind, rnd) in sorted(self._pending, key=lambda key: key[1]):
            for src, msg in self._pending.pop((kind, rnd)).items():
                if rnd > 0:
                    self._queues[(kind, src)].append(msg)

    def drain(self, kind: str) -> dict:
        """``{src: [Message, ...]}`` of ``kind`` received so far, oldest first; no waiting
        (but the other actors of the host get their turn first)."""
        self.take_turns()
        while not self.stopped and self._still_alive():
            msg = self.endpoint.recv(0)
            if msg is None:
                break
            self._route(msg)
        out = {}
        for key in [k for k in self._queues if k[0] == kind and self._queues[k]]:
            out[key[1]] = list(self._queues.pop(key))
        return out

    def take_requests(self, kind: str) -> dict:
        """``{sender: round}`` of the ``kind`` requests received so far (each once)."""
        if not self._requests:  # mostly: a gossip node asks for two kinds each round
            return {}
        return {src: msg.round for src, msg in self._requests.pop(kind, {}).items()}

    def answers(self, kind: str, round: int, peers, asked, timeout: float,
                every: bool = False) -> dict:
        """``{peer: Message}``: the ``kind`` messages of ``round`` from ``peers``, the
        first to come (``every`` False; its sender's id the lowest if several are
        here), or one from each peer that can answer (``every``).

        The wait ends on time-out, as soon as a peer is present that is not among
        those ``asked`` (the caller may ask it too), or when no peer that can answer
        is left: each is done, away, asking us the same (it is catching up too), or
        (``every``) has answered.  While waiting, messages of any later round are
        kept: a node that was away catches up to where its neighbours are, and their
        next messages must be here when it does (see :meth:`advance`); beyond the window,
        the latest :data:`~.routing.MAX_KEPT_AHEAD` of each peer's, so that a flood of
        later rounds holds no more memory than that.
        """
        self.current_round = round
        slot = self._pending[(kind, round)]
        peers, asked = set(peers), set(asked)

        def ready() -> bool:
            if peers - self.away - asked:
                return True
            got = peers & slot.keys()
            if got and not every:
                return True
            pulling = self._requests.get("pull", {}).keys()
            return peers <= self.done | self.away | pulling | got

        window, self.window = self.window, 1 << 30
        self.capped_beyond = round + window  # beyond it, a few rounds a peer (routing.py)
        try:
            self._wait(ready, timeout)
        finally:
            self.window, self.capped_beyond = window, None
        got = sorted(peers & slot.keys(), key=str)
        return {j: slot.pop(j) for j in (got if every else got[:1])}

    def advance(self, round: int) -> None:
        """Skip to ``round`` (after catching up): what was kept for earlier rounds goes."""
        self.current_round = max(self.current_round, round)
        self._drop_stale()

    def go_offline(self) -> None:
        """From now on hear nothing but commands; what was kept is dropped."""
        self.offline = True
        dropped = 0
        for store in (self._pending, self._queues, self._requests):
            dropped += sum(len(v) for v in store.values())
            store.clear()
        if dropped:
            self.endpoint.counters.dropped["offline"] += dropped

    def idle(self, timeout: float) -> None:
        """Wait ``timeout`` wall seconds (or until stopped), obeying commands only."""
        self._wait(lambda: False, timeout, wall=True)

    def come_back(self) -> None:
        self.offline = False

    def poll_control(self, timeout: float) -> Message | None:
        """Wait up to ``timeout`` s for a control message (data messages are kept)."""
        self._wait(lambda: bool(self.control), timeout)
        return self.control.popleft() if self.control else None

    def restrict(self, admits: Callable[[object, str, int], bool], window: int) -> None:
        """Take a data message only where ``admits(src, kind, round)`` (a time-varying
        topology's phases), keeping at least ``window`` rounds ahead; what is kept
        already (it came before the node knew its phases) and not admitted is dropped
        (``off_phase``), as every later one is on arrival."""
        self.admits, self.window = admits, max(self.window, window)
        for (kind, rnd), slot in self._pending.items():
            for src in [s for s in slot if not admits(s, kind, rnd)]:
                del slot[src]
                self.endpoint.counters.drop("off_phase")

    def _drop_strangers(self) -> None:
        """Once the peers are known, forget what others sent before that."""
        if self.peers is None or not self._unconfigured:
            return
        self._unconfigured = 0
        for slot in self._pending.values():
            for src in [s for s in slot if s not in self.peers]:
                del slot[src]
                self.endpoint.counters.drop("unknown_sender")

    def _drop_stale(self) -> None:
        """Forget rounds before the current one, and those beyond the window: kept
        while catching up (:meth:`first`), they would otherwise stay for good."""
        now, last = self.current_round, self.current_round + self.window
        for key in [k for k in self._pending if not now <= k[1] <= last]:
            for src in self._pending.pop(key):
                if key[1] < now:
                    self.endpoint.counters.drop("stale_round")
                else:
                    self._drop_ahead(key[0], key[1], src)
        for key in [k for k in self._ahead if k[1] < now]:
            self._ahead_count -= len(self._ahead.pop(key))

    def _drop_ahead(self, kind: str, rnd: int, src) -> None:
        """Drop and count a message beyond the window, and remember that it came."""
        self.endpoint.counters.drop("round_out_of_window")
        if self._ahead_count < MAX_DROPPED_AHEAD and src not in self._ahead[(kind, rnd)]:
            self._ahead[(kind, rnd)].add(src)
            self._ahead_count += 1
