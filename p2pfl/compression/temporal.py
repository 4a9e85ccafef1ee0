"""Temporal contexts for CABAC (``cabac:temporal``): the co-located levels of the
previous message of the same stream select the contexts of the next.

NNCodec's temporal context adaptation (MPEG NNC, ISO/IEC 15938-17 ed. 2) codes
an update conditioned on the previous one: where the last update had a non-zero
level, the next one likely has one too, often of the same sign.  Here the
significance, sign and greater-than flags of level ``i`` use their own contexts,
chosen by the class of reference level ``i`` (zero, +-1, larger; for the sign,
zero, negative, positive): see ``cabac.py``.

A stream is one tensor of one sender.  The sender keeps the levels it coded last
(the reference) and numbers its messages; each receiver keeps, per sender, the
levels and number of the last message it decoded.  The reference of message n is
always message n − 1, so a message says its number and whether it uses it, in
front of the CABAC bytes::

    varint 2·own_id + temporal (own_id >= 1; temporal 1: coded against own_id − 1)

The sender codes each message both ways and sends the shorter, so temporal
contexts never cost more than plain ones beyond the id; the message is the
reference of the next either way.

A receiver that lacks the reference (it lost a message, or just joined) cannot
decode the message: :class:`TemporalGap`, a :class:`CodecError`, which the node
counts apart (``temporal_gap``).  The receiver's copy then falls behind, it asks
for a resynchronisation (CHOCO's full copy), and the sender, asked, sends its next
message with plain contexts (:meth:`TemporalState.restart`), which every receiver
can decode and which starts the chain again.
"""
from __future__ import annotations

import numpy as np

from .errors import CodecError
from .wire import Reader, Writer

__all__ = ["TemporalGap", "TemporalState"]

_MAX_ID = 1 << 62
_MAX_STREAMS = 4096  # references a receiver keeps (one per sender and tensor)


class TemporalGap(CodecError):
    """A temporally coded message whose reference this receiver does not hold."""


class TemporalState:
    """One stream's sender side, and the receiver side for every sender of it."""

    def __init__(self) -> None:
        self.sent: np.ndarray | None = None  # the levels coded last (our reference)
        self.sent_id = 0
        self.received: dict = {}  # sender -> (own_id, levels) of the last decoded message

    def restart(self) -> None:
        """The next message uses plain contexts (a receiver asked to resynchronise)."""
        self.sent = None

    def reset(self) -> None:
        self.sent, self.sent_id = None, 0
        self.received.clear()

    def encode(self, levels: np.ndarray, coder) -> bytes:
        """``coder(levels, reference)`` → CABAC bytes; returns the message section."""
        ref = self.sent if self.sent is not None and self.sent.size == levels.size else None
        own = self.sent_id + 1
        body = coder(levels, None)
        temporal = 0
        if ref is not None:
            against = coder(levels, ref)
            if len(against) < len(body):
                body, temporal = against, 1
        w = Writer()
        w.varint(2 * own + temporal)
        w.raw(body)
        self.sent, self.sent_id = levels.copy(), own
        return w.tobytes()

    def decode(self, data, count: int, decoder, sender) -> np.ndarray:
        """``decoder(bytes, count, reference)`` → levels; keeps them as ``sender``'s
        reference.  :class:`TemporalGap` when the reference named is not held."""
        r = Reader(memoryview(data))
        head = r.varint(_MAX_ID, "message id")
        own, temporal = head >> 1, head & 1
        if own == 0 or (temporal and own == 1):
            raise CodecError(f"temporal message id {own} (against {own - 1}) is invalid")
        ref_id = own - 1 if temporal else 0
        ref = None
        if temporal:
            held = self.received.get(sender) if sender is not None else None
            if held is None or held[0] != ref_id or held[1].size != count:
                raise TemporalGap(f"message {own} refers to message {ref_id} of its sender, "
                                  f"which this receiver does not hold")
            ref = held[1]
        levels = decoder(bytes(r.take(r.remaining)), count, ref)
        if sender is not None:
            if sender not in self.received and len(self.received) >= _MAX_STREAMS:
                raise CodecError("too many temporal streams")
            self.received[sender] = (own, levels)
        return levels
