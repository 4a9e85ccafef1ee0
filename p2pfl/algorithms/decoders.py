"""The codecs a node decodes its neighbours' messages with, one per codec spec.

Node profiles may give nodes different codecs, so a receiver keeps a decoder per
spec a neighbour sends with.  One codec per spec serves every neighbour (what a
decoder keeps, the temporal references, it keeps per sender).
"""

from __future__ import annotations

from collections import Counter

from .base import MAX_MAGNITUDE, within_range

__all__ = ["Decoders", "CODECS_PER_SENDER"]

#: Codec specs one neighbour may add to a node's decoders (a node sends with one codec).
CODECS_PER_SENDER = 2


class Decoders:
    """``get(spec, sender)``: the decoder of a neighbour's codec spec.

    A spec that does not parse raises ConfigError, a ValueError (a counted drop).
    Each sender may bring in :data:`CODECS_PER_SENDER` specs, so one neighbour naming
    many cannot fill the table for the others.  With ``allowed`` (the run's codec
    table) only its specs are taken: a spec sets the decoder's cost, so a peer may
    not choose its own.
    """

    def __init__(self, codec, numel: int, allowed=None) -> None:
        self.numel, self.allowed = numel, allowed
        self.shapes = getattr(codec, "shapes", None)
        self._codecs: dict = {codec.name: codec}  # codec spec -> codec
        self._brought: Counter = Counter()  # sender -> specs it added

    def get(self, spec: str, sender=None):
        codec = self._codecs.get(spec)
        if codec is None:
            if self.allowed is not None and spec not in self.allowed and spec != "none":
                # (the table leaves out none: a profile's uncompressed node sends it)
                raise ValueError(f"codec {spec[:60]!r} is not one of this run's")
            if self._brought[sender] >= CODECS_PER_SENDER:
                raise ValueError("too many distinct codecs from one neighbour")
            from ..compression import make_codec

            codec = self._codecs[spec] = make_codec(
                spec, error_feedback=False, max_numel=self.numel, shapes=self.shapes)
            self._brought[sender] += 1
        return codec

    def read(self, packet, what: str):
        """A neighbour's packet decoded to a flat tensor of this run's size; ``what`` it
        is (an update, a model) names it in the ValueError for one of another size or
        with values beyond :data:`~.base.MAX_MAGNITUDE` (or not finite), which would
        overflow a copy or the consensus step."""
        codec = self.get(packet.codec, packet.sender)
        x = codec.decode(packet.frames, packet.sender).reshape(-1)
        if x.numel() != self.numel:
            raise ValueError(f"{what} has {x.numel()} values, expected {self.numel}")
        if not within_range(x):
            raise ValueError(f"{what} holds values beyond {MAX_MAGNITUDE:.3g}")
        return x
