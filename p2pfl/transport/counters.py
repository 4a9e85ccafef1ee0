"""Exact byte and message counters, per peer, per direction and per round."""

from __future__ import annotations

from collections import Counter, defaultdict

__all__ = ["ByteCounter"]


class ByteCounter:
    """Counts the bytes handed to and taken from the sockets.

    A message's size is the sum of its frame lengths, the msgpack header frame
    included.  ZeroMQ adds its own framing on top (2 bytes per frame under 256
    bytes, 9 bytes above), which is not counted here.
    """

    def __init__(self) -> None:
        # direction -> peer -> round -> bytes (and messages)
        self._bytes = {"sent": defaultdict(Counter), "received": defaultdict(Counter)}
        self._count = {"sent": defaultdict(Counter), "received": defaultdict(Counter)}
        self.messages = Counter()  # (direction, kind) -> count
        self.dropped = Counter()  # reason -> count

    def add(self, direction: str, peer, round: int, nbytes: int, kind: str) -> None:
        """Record one message of ``nbytes`` sent to or received from ``peer``."""
        self._bytes[direction][peer][round] += nbytes
        self._count[direction][peer][round] += 1
        self.messages[(direction, kind)] += 1

    def drop(self, reason: str) -> None:
        """Record a dropped message (malformed, stale, unknown sender, full queue)."""
        self.dropped[reason] += 1

    def total(self, direction: str, *, peers=None, round: int | None = None) -> int:
        """Bytes in one direction, optionally restricted to some peers and one round."""
        table = self._bytes[direction]
        chosen = table.keys() if peers is None else [p for p in peers if p in table]
        if round is None:
            return sum(sum(table[p].values()) for p in chosen)
        return sum(table[p].get(round, 0) for p in chosen)

    def count(self, direction: str, *, peers=None, handshake: bool = False) -> int:
        """Messages in one direction to or from ``peers``; round 0 (the handshake) only
        if ``handshake``."""
        table = self._count[direction]
        chosen = table.keys() if peers is None else [p for p in peers if p in table]
        return sum(n for p in chosen for r, n in table[p].items() if handshake or r != 0)

    def per_peer(self, direction: str) -> dict:
        """``{peer: bytes}`` over all rounds in one direction."""
        return {p: sum(c.values()) for p, c in self._bytes[direction].items()}
