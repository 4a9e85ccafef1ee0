"""Link emulation at the sender, on the real sockets: uplink bandwidth, latency, loss.

A node whose profile sets a link (``up_mbps``, ``latency_ms``, ``jitter_ms``,
``loss``) hands every message to a peer to its :class:`LinkEmulator`, a thread
that owns the node's sending sockets to its peers and releases each message
when the emulated network would deliver it:

* the uplink is one queue shared by all outgoing messages: a message of B
  bytes occupies it for 8·B / up_mbps µs after the previous one left, with no
  burst allowance;
* then the message travels for ``latency_ms`` plus a Gaussian jitter of
  standard deviation ``jitter_ms`` (truncated at zero).  Jitter delays but
  never reorders the messages to one peer: ZeroMQ runs over TCP, which
  delivers a connection's bytes in order, so a late message holds back the
  ones behind it (head-of-line blocking);
* with probability ``loss`` it is lost: it used the uplink, is counted as sent,
  and is never delivered.  Loss applies to the round payloads (:data:`LOSSY_KINDS`); the
  protocol's own messages (the start-up hello, leave, pull, catch-up, resync) are
  delayed like any other but always arrive, as TCP would deliver them: a lost hello
  would abort the run before it starts.

A message counts as sent when its last byte leaves the emulated uplink (lost or
not), not when the node hands it over: the emulator reports it to the endpoint's
:class:`~p2pfl.transport.counters.ByteCounter`.  Each peer's backlog on the
uplink is bounded by the endpoint's high-water mark, as a real socket's queue is:
beyond it the endpoint drops the message (``send_queue_full``).  The round payloads
that have not left the uplink when the node finishes, after waiting for it to drain,
are dropped and counted (``link_unsent``); the protocol's own messages among them leave
then, and what is in flight still arrives.  A message that
arrives at a full receiving queue was sent and is lost there
(``arrival_queue_full``).

The thread runs apart from the node's loop, so a message scheduled while the
node trains still leaves on time.  The node's thread talks to it over an
inproc PAIR pipe (zero-copy); sockets never cross threads.  This module knows
nothing of learning.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from dataclasses import dataclass

import msgpack
import numpy as np
import zmq

from ..errors import ConfigError
from ..signals import uncut
from .sockets import dealer

__all__ = ["LinkSpec", "LinkEmulator", "parse_link", "LOSSY_KINDS"]

#: The longest emulated latency or jitter: an hour.
MAX_DELAY_MS = 3_600_000.0

#: Message kinds that ``loss`` may drop: what a round carries (gossip models, server
#: instructions, updates and soft labels).
LOSSY_KINDS = frozenset({"model", "control", "update", "softlabels"})


#: The slowest uplink emulated, in Mbit/s: 1 kbit/s.  At 1e-300 a message's
#: transmission time overflowed the emulator's poll (its thread died) and the run hung.
MIN_MBPS = 0.001


@dataclass(frozen=True)
class LinkSpec:
    """A node's emulated uplink: bandwidth (None: unlimited), one-way delay, loss."""

    up_mbps: float | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.up_mbps is not None and not (MIN_MBPS <= self.up_mbps < math.inf):
            raise ConfigError(f"link up_mbps must be at least {MIN_MBPS:g} (1 kbit/s) and "
                              f"finite, got {self.up_mbps}")
        for name in ("latency_ms", "jitter_ms"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_DELAY_MS:  # NaN fails too
                raise ConfigError(f"link {name} must be in [0, {MAX_DELAY_MS:g}], got {value}")
        if not 0 <= self.loss < 1:
            raise ConfigError(f"link loss must be in [0, 1), got {self.loss}")

    @property
    def active(self) -> bool:
        return (self.up_mbps is not None or self.latency_ms > 0 or self.jitter_ms > 0
                or self.loss > 0)

    def transmit_s(self, nbytes: int) -> float:
        """Seconds the uplink is busy with a message of ``nbytes`` bytes."""
        return 0.0 if self.up_mbps is None else 8.0 * nbytes / (self.up_mbps * 1e6)


def parse_link(value, where: str = "--link") -> dict:
    """``"up_mbps=1,latency_ms=20"`` (or a TOML table) → checked keyword values."""
    if isinstance(value, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            key, sep, text = item.partition("=")
            if not sep:
                raise ConfigError(f"{where}: expected KEY=VALUE, got {item!r}")
            if key.strip() in pairs:
                raise ConfigError(f"{where}: {key.strip()} is given twice")
            try:
                pairs[key.strip()] = float(text)
            except ValueError:
                raise ConfigError(f"{where}: {key.strip()} must be a number, got {text!r}") \
                    from None
        value = pairs
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table of link settings, got {value!r}")
    valid = ("up_mbps", "latency_ms", "jitter_ms", "loss")
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown link key(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(valid)}")
    for key, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {v!r}")
        if isinstance(v, int) and abs(v) > 2 ** 53:  # a float of it overflows, or rounds
            raise ConfigError(f"{where}: {key} is out of range, got an integer of "
                              f"{v.bit_length()} bits")
    return {k: float(v) for k, v in value.items()}


class LinkEmulator:
    """The thread that owns a node's sending sockets and paces them like a slow link.

    Used only by :class:`~p2pfl.transport.endpoint.Endpoint`: ``connect``,
    ``send`` and ``close`` are called from the endpoint's thread and travel
    over the pipe; everything else runs in the emulator's own thread.
    """

    def __init__(self, ctx: zmq.Context, spec: LinkSpec, routing_id: bytes, hwm: int,
                 counters, seed: int = 0, security=None) -> None:
        self.spec = spec
        self._security = security  # a Security: its sockets are CURVE clients too
        self.lost = 0  # emulated losses (written by the emulator thread only)
        self._last_arrival: dict = {}  # peer -> when its latest message arrives (in order)
        self._counters = counters  # the endpoint's ByteCounter (told through later())
        # messages handed over (endpoint's thread) and released (emulator's), per peer:
        # each written by one thread; their difference is the peer's backlog
        self._scheduled: dict = {}
        self._released: dict = {}
        self._discarded = threading.Event()
        self._ctx, self._rid, self._hwm = ctx, routing_id, hwm
        self._rng = np.random.default_rng(seed)
        address = f"inproc://p2pfl-link-{id(self)}-{seed}"
        self._pipe = ctx.socket(zmq.PAIR)
        self._pipe.setsockopt(zmq.SNDHWM, 0)  # the emulator's own queue bounds memory
        self._pipe.bind(address)
        far = ctx.socket(zmq.PAIR)  # made here: a failure (no sockets left) is the caller's
        far.connect(address)  # the thread's from its start (a full memory barrier)
        self._thread = threading.Thread(target=self._run, args=(far,), daemon=True,
                                        name="p2pfl-link")
        self._thread.start()

    # ------------------------------------------------------ endpoint's thread
    def _running(self) -> None:
        """A message handed to a dead emulator thread would block its sender for ever."""
        if not self._thread.is_alive():
            raise RuntimeError("the link emulator's thread has stopped")

    def connect(self, peer, address: str) -> None:
        self._running()
        self._hand([b"C", msgpack.packb(peer), address.encode()])

    def _hand(self, parts: list) -> None:
        """Hand one message to the emulator's thread, whole: a signal's exception between
        its parts would merge it with the next, a stop among them (``signals.uncut``)."""
        uncut(self._pipe.send_multipart, parts, copy=False)

    def backlog(self, peer=None) -> int:
        """Messages handed over and not yet released, to ``peer`` (None: to all)."""
        peers = self._scheduled if peer is None else (peer,)
        return sum(self._scheduled.get(p, 0) - self._released.get(p, 0) for p in peers)

    def send(self, peer, parts: list, account: tuple, lossy: bool = True) -> None:
        """Schedule one message to ``peer``; ``lossy``: ``loss`` may drop it.
        ``account`` is ``(round, nbytes, kind, wire)``, counted when it leaves."""
        self._running()
        self._scheduled[peer] = self._scheduled.get(peer, 0) + 1
        self._hand([b"M" if lossy else b"R", msgpack.packb(peer), msgpack.packb(account)]
                   + list(parts))

    def discard(self, timeout: float = 5.0) -> None:
        """Drop the round payloads that have not left the uplink (``link_unsent``); the
        protocol's messages among them leave at once (:meth:`_discard_undeparted`)."""
        if not self._thread.is_alive():
            return
        self._discarded.clear()
        self._hand([b"X"])
        self._discarded.wait(timeout)

    def close(self, linger: float | None) -> None:
        """Deliver what is still scheduled (up to ``linger`` s, default 2), then stop."""
        wait = 2.0 if linger is None else float(linger)
        if self._thread.is_alive():
            self._hand([b"S", msgpack.packb(wait)])
            self._thread.join(wait + 5.0)
        self._pipe.close(linger=0)

    # ------------------------------------------------------ emulator's thread
    def _run(self, pipe: zmq.Socket) -> None:
        socks: dict = {}
        # heaps of (time, order, ...): when each message leaves the uplink, and when
        # it reaches its peer (a lost one only leaves); emulator thread only
        self._departures, self._arrivals = [], []
        order = itertools.count()
        uplink_free = 0.0
        stop_at = None
        try:
            while True:
                now = time.monotonic()
                self._depart(now)
                self._arrive(now, socks)
                if stop_at is not None:  # closing: let what is in flight arrive
                    if not self._arrivals or now >= stop_at:
                        break
                    time.sleep(min(self._arrivals[0][0] - now, stop_at - now, 0.05))
                    continue
                due = min((h[0][0] for h in (self._departures, self._arrivals) if h),
                          default=now + 1.0)
                if not pipe.poll(int(max(0.0, due - now) * 1000) + 1):
                    continue
                cmd, *rest = pipe.recv_multipart(copy=False)
                kind = cmd.bytes
                if kind == b"C":  # a new peer, or one that moved
                    peer = msgpack.unpackb(rest[0].bytes)
                    if peer in socks:
                        socks[peer].close(linger=0)
                    socks[peer] = dealer(self._ctx, peer, rest[1].bytes.decode(),
                                         routing_id=self._rid, hwm=self._hwm,
                                         security=self._security)
                elif kind == b"S":
                    stop_at = time.monotonic() + msgpack.unpackb(rest[0].bytes)
                elif kind == b"X":
                    self._discard_undeparted()
                else:
                    uplink_free = self._schedule(order, uplink_free,
                                                 msgpack.unpackb(rest[0].bytes),
                                                 tuple(msgpack.unpackb(rest[1].bytes)),
                                                 rest[2:], lossy=kind == b"M")
        finally:
            for sock in socks.values():
                sock.close(linger=0)
            pipe.close(linger=0)

    def _schedule(self, order, uplink_free: float, peer, account: tuple, frames,
                  lossy: bool = True) -> float:
        """Put one message on the uplink; return when the uplink is free again."""
        spec, now = self.spec, time.monotonic()
        nbytes = sum(len(f) for f in frames)
        left, k = max(now, uplink_free) + spec.transmit_s(nbytes), next(order)
        lost = lossy and spec.loss and self._rng.random() < spec.loss
        heapq.heappush(self._departures, (left, k, peer, account, bool(lost), lossy))
        if lost:  # it uses the uplink, and goes no further
            return left
        delay = spec.latency_ms
        if spec.jitter_ms:
            delay = max(0.0, delay + spec.jitter_ms * self._rng.standard_normal())
        arrive = max(left + delay / 1000.0, self._last_arrival.get(peer, 0.0))
        self._last_arrival[peer] = arrive
        heapq.heappush(self._arrivals, (arrive, k, peer, frames))
        return left

    def _release(self, peer, event: tuple) -> None:
        """A message leaves the backlog: ``event`` goes to the endpoint's counters."""
        self._counters.later(*event)
        self._released[peer] = self._released.get(peer, 0) + 1

    def _depart(self, now: float) -> None:
        """Messages whose last byte left the uplink by ``now`` count as sent."""
        while self._departures and self._departures[0][0] <= now:
            _, _, peer, account, lost, _ = heapq.heappop(self._departures)
            self.lost += lost
            self._release(peer, ("sent", peer, *account))

    def _arrive(self, now: float, socks: dict) -> None:
        """Hand to the peer's socket what reaches it by ``now``."""
        while self._arrivals and self._arrivals[0][0] <= now:
            _, _, peer, frames = heapq.heappop(self._arrivals)
            sock = socks.get(peer)
            if sock is None:
                self._counters.later("drop", "send_unknown_peer")
                continue
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:  # sent, and lost at a full receiving queue
                self._counters.later("drop", "arrival_queue_full")

    def _discard_undeparted(self) -> None:
        """Drop the round payloads that have not left the uplink (``link_unsent``).  The
        protocol's own messages among them (a final leave, a pull, ...) always arrive, as
        under loss: they leave now, in order, at the uplink's rate.  What is in flight
        still arrives."""
        now = free = time.monotonic()
        undeparted, retimed = {d[1] for d in self._departures}, []
        for _, k, peer, account, _, lossy in sorted(self._departures):
            if lossy:
                self._release(peer, ("drop", "link_unsent"))
            else:
                free += self.spec.transmit_s(account[1])
                retimed.append((free, k, peer, account, False, False))
        frames = {k: f for _, k, _, f in self._arrivals if k in undeparted}
        kept = [a for a in self._arrivals if a[1] not in undeparted]
        last = {}  # peer -> the latest arrival still in flight (order per peer holds)
        for arrive, _, peer, _ in kept:
            last[peer] = max(last.get(peer, now), arrive)
        for left, k, peer, *_ in retimed:  # a protocol message is never lost: it has frames
            last[peer] = max(last.get(peer, now), left + self.spec.latency_ms / 1000.0)
            kept.append((last[peer], k, peer, frames[k]))
        self._departures, self._arrivals = retimed, kept
        heapq.heapify(self._departures)
        heapq.heapify(self._arrivals)
        self._discarded.set()
