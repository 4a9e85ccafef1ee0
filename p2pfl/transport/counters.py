"""Exact byte and message counters, per peer, per direction and per round."""

from __future__ import annotations

from collections import Counter, defaultdict

__all__ = ["ByteCounter"]


class ByteCounter:
    """Counts the bytes handed to and taken from the sockets.

    A message's size is the sum of its frame lengths, the msgpack header frame
    included.  What ZeroMQ adds on top (:mod:`~p2pfl.transport.framing`) is
    counted apart: ``wire`` is each sent message's size on the wire, framing
    included, and ``setup`` each connection's greetings and handshake.
    """

    def __init__(self) -> None:
        # direction -> peer -> 0 (the handshake, round 0) or 1 (every other round) ->
        # bytes (and messages): two entries a peer, whatever rounds a sender names
        self._bytes = {"sent": defaultdict(Counter), "received": defaultdict(Counter)}
        self._count = {"sent": defaultdict(Counter), "received": defaultdict(Counter)}
        self.messages = Counter()  # (direction, kind) -> count
        self.dropped = Counter()  # reason -> count
        self.wire = Counter()  # peer -> bytes sent on the wire, ZMTP framing included
        self.setup = Counter()  # peer -> connection set-up bytes (both directions)

    def add(self, direction: str, peer, round: int, nbytes: int, kind: str,
            wire: int = 0) -> None:
        """Record one message of ``nbytes`` (``wire`` on the wire) sent to or received
        from ``peer``."""
        if wire:
            self.wire[peer] += wire
        part = 0 if round == 0 else 1
        self._bytes[direction][peer][part] += nbytes
        self._count[direction][peer][part] += 1
        self.messages[(direction, kind)] += 1

    def drop(self, reason: str) -> None:
        """Record a dropped message (malformed, stale, unknown sender, full queue)."""
        self.dropped[reason] += 1

    def total(self, direction: str, *, peers=None, handshake_only: bool = False) -> int:
        """Bytes in one direction, optionally restricted to some peers, or to round 0
        (the handshake)."""
        table = self._bytes[direction]
        chosen = table.keys() if peers is None else [p for p in peers if p in table]
        if not handshake_only:
            return sum(sum(table[p].values()) for p in chosen)
        return sum(table[p].get(0, 0) for p in chosen)

    def payload(self, direction: str, peers) -> int:
        """Bytes to or from ``peers`` in every round but 0 (the handshake), in time
        linear in the peers alone: a node asks after every round."""
        table = self._bytes[direction]
        return sum(table[p].get(1, 0) for p in peers if p in table)

    def count(self, direction: str, *, peers=None, handshake: bool = False) -> int:
        """Messages in one direction to or from ``peers``; round 0 (the handshake) only
        if ``handshake``."""
        table = self._count[direction]
        chosen = table.keys() if peers is None else [p for p in peers if p in table]
        return sum(n for p in chosen for r, n in table[p].items() if handshake or r != 0)

    def per_peer(self, direction: str) -> dict:
        """``{peer: bytes}`` over all rounds in one direction."""
        return {p: sum(c.values()) for p, c in self._bytes[direction].items()}
