"""Who sent a message: the connection's claim, or its CURVE key's, and replay checks.

An :class:`~p2pfl.transport.endpoint.Endpoint` hands each unpacked message here with
the frames it came in (see its module docstring, "Identity is bound to the
connection").  Without CURVE, or over ``inproc://``, the connection's routing id must
name the header's sender (:func:`~p2pfl.transport.sockets.identity`; a launcher's
peers may add their process, :func:`~p2pfl.transport.sockets.claims`).  With CURVE the
sender is the node bound to the key's ZAP user id, and each of its processes' sequence
numbers must grow (a replay is refused).  A message from a key the run allows but has
not yet bound to a node is held until :meth:`Senders.bind`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Callable

import zmq

from .security import Security
from .sockets import claims, identity
from .wire import Message

__all__ = ["Senders", "MAX_HELD", "MAX_HELD_PER_KEY", "MAX_ROUTES"]

#: Messages from allowed keys not yet bound to a node id that are held, at most, and
#: at most per key (a neighbour says hello and sends a few rounds before its key is
#: bound; a run member that is no neighbour must not fill the store for the others).
MAX_HELD = 10_000
MAX_HELD_PER_KEY = 64
#: Routes (processes, connections) of one CURVE key whose sequence numbers are kept.
MAX_ROUTES = 16


def frame_property(frame: zmq.Frame, name: str) -> str | None:
    """A received frame's connection metadata ``name``, or None where it has none."""
    try:
        return frame.get(name)
    except zmq.ZMQError:
        return None


def over_inproc(frame: zmq.Frame) -> bool:
    """Whether a frame came over ``inproc://``: every connection of a network or ipc
    engine names its peer's socket type in the ZMTP handshake, inproc's none."""
    return frame_property(frame, "Socket-Type") is None


class Senders:
    """The sender checks of one endpoint, and what they keep: sequence numbers per
    CURVE route, and the messages held for keys not yet bound.

    ``counters`` (the endpoint's :class:`~p2pfl.transport.counters.ByteCounter`) counts
    what is refused: ``spoofed`` and ``replayed``.  ``process_ids``: routing ids may
    name their process after the node (a launcher's connections from its nodes).
    """

    def __init__(self, security: Security | None, counters, process_ids: bool = False) -> None:
        self.security, self.counters, self.process_ids = security, counters, process_ids
        self._last_seq: dict = {}  # (sender, route, channel) -> latest sequence number
        self._routes: dict = defaultdict(dict)  # (sender, channel) -> its routes, in order
        self._seq_floor: dict = {}  # (sender, channel) -> latest of its evicted routes
        self._held: list = []  # (parts, channel) from allowed keys not yet bound to a node
        self._held_per: Counter = Counter()  # user (key) -> messages of it held
        # the owner's hook for a message whose key is another node's: (msg, that node)
        self.on_spoofed: Callable | None = None

    def check(self, msg: Message, parts: list, channel: str) -> bool:
        """Whether ``msg`` (unpacked from ``parts``, ``msg.route`` set) is from the
        sender it names; if not it is counted, or held for its key's binding."""
        if self.security is None or over_inproc(parts[1]):
            if not (claims(msg.route, msg.src) if self.process_ids
                    else msg.route == identity(msg.src)):
                self.counters.drop("spoofed")
                return False
            return True
        user = frame_property(parts[1], "User-Id")
        sender = self.security.node_of(user)
        if sender is None and user and self.security.allows(user):  # its node not known yet
            if len(self._held) < MAX_HELD and self._held_per[user] < MAX_HELD_PER_KEY:
                self._held.append((parts, channel))
                self._held_per[user] += 1
                return False
        if sender is None or sender != msg.src:
            self.counters.drop("spoofed")
            if sender is not None and self.on_spoofed is not None:
                self.on_spoofed(msg, sender)
            return False
        if not self._fresh(sender, msg.route, channel, msg.seq):
            self.counters.drop("replayed")
            return False
        return True

    def bind(self, node, public) -> list:
        """``public`` is ``node``'s key: the held ``(parts, channel)``, oldest first, to
        be checked again (what stays unbound is held, and counted, again)."""
        self.security.bind(node, public)
        held, self._held = self._held, []
        self._held_per.clear()
        return held

    def _fresh(self, sender, route: bytes, channel: str, seq: int) -> bool:
        """Whether ``seq`` is later than the last one of ``sender``'s process on
        ``route`` (a second process with the key counts apart; its sequence starts
        at its start time in µs).  At most MAX_ROUTES routes a sender are kept: a key
        holder cycling routing ids grew the table by one each.  An evicted route's
        last number becomes the sender's floor, which every route must pass."""
        key = (sender, route, channel)
        last = self._last_seq.get(key, self._seq_floor.get((sender, channel)))
        if last is not None and seq <= last:
            return False
        routes = self._routes[(sender, channel)]
        routes[route] = None  # insertion order: the oldest first
        if len(routes) > MAX_ROUTES:
            old = next(iter(routes))
            del routes[old]
            evicted = self._last_seq.pop((sender, old, channel), None)
            if evicted is not None:
                floor = self._seq_floor.get((sender, channel), evicted)
                self._seq_floor[(sender, channel)] = max(floor, evicted)
        self._last_seq[key] = seq
        return True
