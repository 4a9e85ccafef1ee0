"""Exact byte and message counters, per peer, per direction and per round."""

from __future__ import annotations

from collections import Counter, defaultdict, deque

__all__ = ["ByteCounter", "OTHERS"]

#: The peer under which an endpoint counts senders it does not count apart
#: (:data:`~p2pfl.transport.inbox.MAX_STRANGERS`).
OTHERS = "others"


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
        self._messages = Counter()  # (direction, kind) -> count
        self._dropped = Counter()  # reason -> count
        self._wire = Counter()  # peer -> bytes sent on the wire, ZMTP framing included
        self.setup = Counter()  # peer -> connection set-up bytes (both directions)
        # what another thread (a link emulator) reports, applied by the owner's thread
        # when it next reads: a deque's append and popleft are thread-safe
        self._later: deque = deque()

    def later(self, *event) -> None:
        """From another thread: ``("sent", peer, round, nbytes, kind, wire)`` or
        ``("drop", reason)``, applied by :meth:`settle` on the owner's thread."""
        self._later.append(event)

    def settle(self) -> None:
        """Apply what :meth:`later` reported (every reader calls it first)."""
        while self._later:
            event = self._later.popleft()
            if event[0] == "drop":
                self._dropped[event[1]] += 1
            else:
                self.add(*event)

    @property
    def messages(self) -> Counter:
        """``(direction, kind)`` -> messages."""
        self.settle()
        return self._messages

    @property
    def dropped(self) -> Counter:
        """reason -> dropped messages."""
        self.settle()
        return self._dropped

    @property
    def wire(self) -> Counter:
        """peer -> bytes sent on the wire, ZMTP framing included."""
        self.settle()
        return self._wire

    def add(self, direction: str, peer, round: int, nbytes: int, kind: str,
            wire: int = 0) -> None:
        """Record one message of ``nbytes`` (``wire`` on the wire) sent to or received
        from ``peer``."""
        if wire:
            self._wire[peer] += wire
        part = 0 if round == 0 else 1
        self._bytes[direction][peer][part] += nbytes
        self._count[direction][peer][part] += 1
        self._messages[(direction, kind)] += 1

    def drop(self, reason: str) -> None:
        """Record a dropped message (malformed, stale, unknown sender, full queue)."""
        self._dropped[reason] += 1

    def total(self, direction: str, *, peers=None, handshake_only: bool = False) -> int:
        """Bytes in one direction, optionally restricted to some peers, or to round 0
        (the handshake)."""
        self.settle()
        table = self._bytes[direction]
        chosen = table.keys() if peers is None else [p for p in peers if p in table]
        if not handshake_only:
            return sum(sum(table[p].values()) for p in chosen)
        return sum(table[p].get(0, 0) for p in chosen)

    def payload(self, direction: str, peers) -> int:
        """Bytes to or from ``peers`` in every round but 0 (the handshake), in time
        linear in the peers alone: a node asks after every round."""
        self.settle()
        table = self._bytes[direction]
        return sum(table[p].get(1, 0) for p in peers if p in table)

    def count(self, direction: str, *, peers=None, handshake: bool = False) -> int:
        """Messages in one direction to or from ``peers``; round 0 (the handshake) only
        if ``handshake``."""
        self.settle()
        table = self._count[direction]
        chosen = table.keys() if peers is None else [p for p in peers if p in table]
        return sum(n for p in chosen for r, n in table[p].items() if handshake or r != 0)

    def per_peer(self, direction: str) -> dict:
        """``{peer: bytes}`` over all rounds in one direction."""
        self.settle()
        return {p: sum(c.values()) for p, c in self._bytes[direction].items()}
