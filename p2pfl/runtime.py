"""The verbs every node role uses: send, gather, report, final counters.

A role (gossip node, worker, coordinator; :mod:`p2pfl.roles`) holds the
learning and never touches a socket.  It talks through one :class:`Runtime`,
which owns the node's endpoint and mailbox, turns wire messages into
:class:`~p2pfl.algorithms.base.Packet` objects, and sends each round's record
to an injected sink (the launcher, by default).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from .algorithms.base import Packet
from .signals import uncut
from .transport import Endpoint, Mailbox

__all__ = ["Runtime", "LAUNCHER", "launcher_sink", "to_packet"]

#: The id of the launcher on the wire.
LAUNCHER = "launcher"
#: Once the closer (the coordinator) is done, the nodes still running are told to
#: stop after this long: a worker that was offline when the run ended gets no final.
CLOSER_GRACE_S = 10.0


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


_PSS_CACHE: list = [0, 0.0, 0]  # (pid, when, bytes): the actors of a host ask at once


def pss_bytes() -> int:
    """This process's proportional set size now (``/proc/self/smaps_rollup``): its
    private pages, and each page it shares with other processes divided among them, so
    that forked processes' figures add up to the memory they use together (their peak
    RSS counted every shared page in each: 13.6 GB for 64 host processes whose machine
    used 0.41 GB more).  0 where the kernel does not say.  Read at most once a second
    (1.5 ms a read with torch loaded: 512 actors of a host say bye together)."""
    import time

    now, pid = time.monotonic(), os.getpid()
    if _PSS_CACHE[0] == pid and now - _PSS_CACHE[1] < 1.0:  # not a forked parent's
        return _PSS_CACHE[2]
    value = 0
    try:
        with open("/proc/self/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    value = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    _PSS_CACHE[:] = [pid, now, value]
    return value


def to_packet(msg) -> Packet:
    """The packet a wire message carries (its round included)."""
    return Packet(msg.codec, list(msg.frames), list(msg.shapes), list(msg.dtypes),
                  dict(msg.meta), msg.round, msg.src)


def launcher_sink(endpoint: Endpoint) -> Callable:
    """A record sink that sends records (and an optional vector, the last record's)
    to the launcher as one ``metrics`` message: ``meta = {"records": [...]}``."""
    def sink(records: list, vector) -> None:
        frames = [] if vector is None else [np.ascontiguousarray(vector, dtype=np.float32)]
        endpoint.send(LAUNCHER, "metrics", records[-1]["round"], meta={"records": records},
                      frames=frames, shapes=[[f.size] for f in frames],
                      dtypes=["float32"] * len(frames))
    return sink


class Runtime:
    """One node's transport verbs.

    Parameters
    ----------
    endpoint, mailbox
        The node's sockets and round mailbox, owned by the calling thread.
    spec : NodeSpec
        The node (``id``, ``label``, ``role``, neighbours).
    sink : callable, optional
        ``sink(records, vector)``; the launcher by default.

    Round records are held and sent together, at least every ``FLUSH_S`` seconds
    (and about once a second while the node waits), and at once when a round was
    evaluated, carries a model, or the node goes offline or finishes
    (:meth:`flush`): one message a round to the launcher cost fast rounds a
    tenth of their time.
    """

    #: Longest a record is held while the node keeps completing rounds.
    FLUSH_S = 0.1

    def __init__(self, endpoint: Endpoint, mailbox: Mailbox, spec, sink=None) -> None:
        self.endpoint, self.mailbox = endpoint, mailbox
        endpoint.use_codec_names(spec.runtime.codec_names)
        self.id, self.label, self.role = spec.id, spec.label, spec.role
        self.peers = list(spec.peers)
        self.sink = sink or launcher_sink(endpoint)
        self.t_start = time.monotonic()
        self._held: list = []  # records not sent yet
        self._recorded = (0, 0)  # payload bytes sent and received by the last record
        self._flushed = time.monotonic()
        mailbox.on_tick = self.flush

    @property
    def stopped(self) -> bool:
        return self.mailbox.stopped

    @property
    def finish_requested(self) -> bool:
        """The launcher asked us to end the run once the round in progress is done."""
        return self.mailbox.finish

    def send(self, peer, kind: str, rnd: int, packet: Packet | None = None, **meta) -> int:
        """Send ``packet`` (or an empty message) to ``peer``; return the bytes sent."""
        return self.send_many((peer,), kind, rnd, packet, **meta)

    def send_many(self, peers, kind: str, rnd: int, packet: Packet | None = None,
                  **meta) -> int:
        """:meth:`send` to each of ``peers``, the message packed once."""
        if packet is None:
            return self.endpoint.send_many(peers, kind, rnd, meta=meta or None)
        return self.endpoint.send_many(peers, kind, rnd, frames=packet.frames,
                                       codec=packet.codec, shapes=packet.shapes,
                                       dtypes=packet.dtypes,
                                       meta=dict(packet.meta or {}, **meta))

    def gather(self, kind: str, rnd: int, peers, timeout: float,
               rejoined_since: float | None = None) -> dict:
        """``{peer: Packet}`` of round ``rnd`` from ``peers``, waiting at most ``timeout`` s
        (and, with ``rejoined_since``, a run time, only until one of them still awaited
        rejoins after it: :meth:`rejoined_since`).

        Packets from peers that were not waited for are included when they came.
        """
        since = None if rejoined_since is None else rejoined_since + self.t_start
        msgs = self.mailbox.collect(kind, rnd, peers, timeout, rejoined_since=since)
        return {} if self.stopped else {j: to_packet(m) for j, m in msgs.items()}

    def drain(self, kind: str) -> dict:
        """Without a round barrier: ``{peer: [Packet, ...]}`` that arrived since the last
        drain, oldest first, without waiting."""
        return {j: [to_packet(m) for m in msgs]
                for j, msgs in self.mailbox.drain(kind).items()}

    def go_asynchronous(self) -> None:
        """Switch the mailbox from round-keyed collection to per-sender queues."""
        self.mailbox.go_asynchronous()

    def next_after(self, kind: str, after: int, src, timeout: float) -> Packet | None:
        """``src``'s next ``kind`` packet for a round later than ``after`` (None on time-out)."""
        msg = self.mailbox.next_after(kind, after, src, timeout)
        return None if msg is None else to_packet(msg)

    def requests(self, kind: str) -> dict:
        """``{peer: round}`` of the ``kind`` requests since the last call."""
        return self.mailbox.take_requests(kind)

    def answers(self, kind: str, rnd: int, peers, asked, timeout: float,
                every: bool = False) -> dict:
        """``{peer: Packet}`` of round ``rnd``: the first ``kind`` packet from any of
        ``peers``, or (``every``) one from each that can answer; the wait ends on
        time-out, when none is left to answer, or once a peer not in ``asked`` is
        present (:meth:`Mailbox.answers`)."""
        msgs = self.mailbox.answers(kind, rnd, peers, asked, timeout, every)
        return {j: to_packet(m) for j, m in msgs.items()}

    @property
    def done(self) -> set:
        """Peers that finished their rounds."""
        return self.mailbox.done

    def offline(self, availability, give_up: Callable[[], bool] | None = None) -> bool:
        """An emulated offline period: hear nothing but commands (stop, liveness) until
        ``availability`` says the node is online again, it is stopped, or ``give_up()``.
        Returns whether it gave up."""
        self.mailbox.go_offline()
        gave_up = False
        while not self.stopped:
            # asked first: what the last wait heard may be the reason (the neighbours
            # finished while it slept, and it would come back to rounds alone)
            if give_up is not None and give_up():
                gave_up = True
                break
            wait = availability.online_at(self.clock()) - self.clock()
            if wait <= 0:
                break
            self.mailbox.idle(min(wait, 0.5))
        self.mailbox.come_back()
        return gave_up

    def idle(self, seconds: float) -> None:
        """Wait, obeying commands only (stop, liveness)."""
        self.mailbox.idle(seconds)

    def drain_uplink(self, timeout: float) -> None:
        """Wait, obeying commands, until an emulated uplink has sent what it holds (up
        to ``timeout`` s): a message is counted as sent when it leaves the link."""
        deadline = time.monotonic() + timeout
        while (self.endpoint.link_backlog() and not self.mailbox.stopped
               and time.monotonic() < deadline):
            self.mailbox.idle(0.01)  # off the host's CPU gate; a stop or a lost launcher ends it

    def compute(self, fn):
        """``fn()``, on the host's compute thread when actors share the process."""
        gate = self.mailbox.gate
        return fn() if gate is None else gate.compute(fn)

    def advance(self, rnd: int) -> None:
        """We skipped to round ``rnd`` (catching up after being away)."""
        self.mailbox.advance(rnd)

    @property
    def away(self) -> set:
        """Peers that said they left and have sent nothing since."""
        return self.mailbox.away

    def left_since(self, peer, t: float) -> bool:
        """Whether ``peer`` said it left at run time ``t`` or later (it may be back)."""
        return self.mailbox.left_at.get(peer, -1.0) - self.t_start >= t

    def rejoined_since(self, peer, t: float) -> bool:
        """Whether the launcher said at run time ``t`` or later that ``peer`` rejoined
        (a restarted process, at a new address)."""
        return self.mailbox.rejoined_at.get(peer, -1.0) - self.t_start >= t

    def clock(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t_start

    def last_heard(self, peer) -> int:
        """The latest round ``peer`` sent anything for (even late, or beyond the window);
        -1 if none."""
        return self.mailbox.last_heard.get(peer, -1)

    def heard_from(self, peer, since_round: int) -> bool:
        """Whether ``peer`` sent anything for a round >= ``since_round`` (even if late)."""
        return self.last_heard(peer) >= since_round

    def drop(self, reason: str) -> None:
        """Count a message the role could not use."""
        self.endpoint.counters.drop(reason)

    def report(self, rnd: int, fields: dict, vector=None) -> None:
        """Send round ``rnd``'s record: ``fields`` plus the node's identity and counters.

        The record's bytes are those sent to and received from peers since this
        process's previous record (the handshake apart), whatever round their
        messages were of: a catch-up for an earlier round, a round played twice or
        a final model all land in some record, so the records sum to the counters.
        """
        c = self.endpoint.counters
        sent, received = c.payload("sent", self.peers), c.payload("received", self.peers)
        rec = {"round": rnd, "node": self.id, "label": self.label, "role": self.role}
        rec.update(fields)
        rec.update(
            bytes_sent=sent - self._recorded[0], bytes_received=received - self._recorded[1],
            wall_s=round(time.monotonic() - self.t_start, 4),
            process_cpu_s=round(time.process_time(), 4),
            dropped=sum(c.dropped.values()))
        uncut(self._hold, rec, (sent, received))
        urgent = vector is not None or rec.get("accuracy") is not None or rec.get("offline")
        if urgent or time.monotonic() - self._flushed >= self.FLUSH_S:
            self.flush(vector)

    def _hold(self, rec: dict, recorded: tuple) -> None:
        self._recorded = recorded
        self._held.append(rec)

    def flush(self, vector=None) -> None:
        """Send the held records now (``vector``: the last one's model).

        Holding a record and sending the held ones are each one step that a signal's
        exception waits for (:func:`~p2pfl.signals.uncut`): a SIGTERM between taking
        the held records and sending them lost them, while the node's bye counted their
        bytes as recorded (a full-suite run: 38,550 bytes, one round, missing from
        ``bytes_sent_total``)."""
        self._flushed = time.monotonic()
        if self._held:
            uncut(self._send_held, vector)

    def _send_held(self, vector) -> None:
        held, self._held = self._held, []
        self.sink(held, vector)

    def final_counters(self, **extra) -> dict:
        """Exact totals of the whole run for the ``bye`` message (handshakes apart)."""
        self.endpoint.count_refusals()
        c, peers = self.endpoint.counters, self.peers
        known = set(peers)
        handshake = c.total("sent", peers=peers, handshake_only=True)
        sent = c.payload("sent", peers)  # every round but the handshake's
        received = c.payload("received", peers)
        wire = sum(c.wire[j] for j in peers)  # handshakes and framing included
        out = {
            "node": self.id, "role": self.role,
            "bytes_sent": sent,
            "bytes_received": received,
            # sent or received after the last record (e.g. in a round stopped half-way):
            # in no record
            "bytes_sent_unrecorded": sent - self._recorded[0],
            "bytes_received_unrecorded": received - self._recorded[1],
            "handshake_bytes": handshake,
            # the run's peers only: a stranger's messages are counted as dropped, and
            # strangers naming themselves by the thousand must not swell the bye
            "sent_per_peer": [[j, n] for j, n in c.per_peer("sent").items() if j in known],
            "received_per_peer": [[j, n] for j, n in c.per_peer("received").items()
                                  if j in known],
            "dropped": dict(c.dropped),
            "messages_sent": c.count("sent", peers=peers),
            "emulated_lost": self.endpoint.emulated_lost,
            "wire_bytes": wire,
            "framing_bytes": wire - sent - handshake,
            "setup_bytes": sum(c.setup[j] for j in peers),
            "pid": os.getpid(), "peak_rss_bytes": peak_rss_bytes(), "pss_bytes": pss_bytes(),
        }
        out.update(extra)
        return out
