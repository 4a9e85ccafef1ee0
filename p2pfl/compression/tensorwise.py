"""Per-tensor exchange: a model's parameter tensors, each coded by a codec of its own.

A node hands over its parameters as one flat vector plus their shapes (in
``model.parameters()`` order); :class:`TensorwiseCodec` cuts the vector into the
tensors, codes each with its own :class:`~p2pfl.compression.codec.Codec` (own
state: PowerSGD's warm start, a stochastic stage's generator) and sends them as
one message.  A tensor of two or more dimensions keeps its shape, so a low-rank
stage sees a matrix (a conv kernel (out, in, k, ...) as (out, in·k·...), as in
PowerSGD, Vogels et al. 2019, §3) and a vector (a bias) is sent dense by it.

Top-k, STC and SBC choose k per tensor by default, as the STC paper does
(Sattler et al. 2020, Alg. 2 applies STC to each layer's update); the stage
argument ``:global`` keeps instead the k = ⌈p·n⌉ largest entries of the whole
model (one threshold), so a tensor gets the share of them it holds.  Each tensor
keeps at least one entry either way.

Error feedback (:class:`~p2pfl.compression.feedback.ErrorFeedback`) wraps this
codec as it wraps any other: its residual is the concatenation of one residual
per tensor, e_l ← e_l + x_l − C_l(e_l + x_l) for every tensor l.

Layout (version 3): ``b"PT"``, a version byte, varint ``n`` (tensors), ``n``
varints (each tensor's blob length in bytes), then the ``n`` blobs back to back.
Each blob has the one-byte implicit header (:mod:`~p2pfl.compression.wire`):
both ends know the codec and the shapes.  The bytes go as few frames: small
parts share one, and a part of 64 KiB or more (a dense float payload) is a
frame of its own, uncopied.  For the mnist1d CNN under ``stc:0.01+golomb`` that
is one frame instead of nine, and a message of 227 bytes instead of 337
(BENCHMARKS.md).  Decoding checks the lengths against the bytes there
and every tensor's shape against the expected one; anything else is a
:class:`~p2pfl.compression.errors.CodecError`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .codec import wire_size
from .errors import CodecError
from .sparsify import count_k
from .wire import Reader, Writer

__all__ = ["TensorwiseCodec"]

_MAGIC, _VERSION = b"PT", 3


class TensorwiseCodec:
    """One codec per parameter tensor behind the interface of one codec.

    Parameters
    ----------
    make : callable
        ``make(index) -> Codec``: a fresh codec for tensor ``index`` (own seed).
    shapes : sequence of tuples
        The parameter shapes, in flattening order.
    """

    def __init__(self, make, shapes) -> None:
        self.shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        if not self.shapes:
            raise ValueError("per-tensor exchange needs at least one tensor")
        self.sizes = [math.prod(s) for s in self.shapes]
        self.numel = sum(self.sizes)
        self.codecs = [make(i) for i in range(len(self.shapes))]
        first = self.codecs[0]
        self.name, self.stages = first.name, first.stages
        self.transform = first.transform
        self.scope = getattr(self.transform, "scope", "tensor")
        # the configured fraction: with :global each tensor's stage gets its own share
        # of the model's k before each encode, so the stages' p no longer hold it
        self.fraction = getattr(self.transform, "p", None)

    biased = property(lambda self: self.codecs[0].biased)
    stochastic = property(lambda self: self.codecs[0].stochastic)

    def __repr__(self) -> str:
        return f"TensorwiseCodec({self.name!r}, {len(self.shapes)} tensors)"

    def reset(self) -> None:
        for c in self.codecs:
            c.reset()

    def restart(self) -> None:
        for c in self.codecs:
            c.restart()

    # ------------------------------------------------------------------ encoding
    def encode(self, flat: torch.Tensor) -> list:
        return self.encode_with_reconstruction(flat, want_reconstruction=False)[0]

    def encode_with_reconstruction(self, flat: torch.Tensor, want_reconstruction=True):
        """Frames for the model vector ``flat``, and the vector they decode to."""
        x = flat.detach().to("cpu", torch.float32).reshape(-1)
        if x.numel() != self.numel:
            raise CodecError(f"vector of {x.numel()} entries for tensors of {self.numel}")
        fractions = self._global_fractions(x.numpy()) if self.scope == "global" else None
        index, blobs, recon = Writer(), [], []
        index.raw(_MAGIC)
        index.byte(_VERSION)
        index.varint(len(self.shapes))
        for i, (codec, part) in enumerate(zip(self.codecs, torch.split(x, self.sizes))):
            if fractions is not None:
                codec.transform.p = fractions[i]
            f, r = codec.encode_with_reconstruction(part.reshape(self.shapes[i]),
                                                    want_reconstruction, implicit=True)
            index.varint(wire_size(f))
            blobs.append(f)
            if want_reconstruction:
                recon.append(r.reshape(-1))
        out = Writer()  # small parts share a frame; large ones stay frames of their own
        out.raw(index.tobytes())
        for f in blobs:
            for p in f:
                out.raw(p)
        return out.frames(), (torch.cat(recon) if want_reconstruction else None)

    def _global_fractions(self, x: np.ndarray) -> list:
        """Per tensor, the fraction that keeps its entries among the model's k largest."""
        k = count_k(self.fraction, x.size)
        top = np.argpartition(np.abs(x), x.size - k)[x.size - k:]  # exactly k, ties too
        bounds = np.cumsum([0, *self.sizes])
        kept = np.bincount(np.searchsorted(bounds, top, side="right") - 1,
                           minlength=len(self.sizes))
        return [max(1, int(kept[i])) / self.sizes[i] for i in range(len(self.sizes))]

    # ------------------------------------------------------------------ decoding
    def decode(self, frames, sender=None) -> torch.Tensor:
        try:
            views = [memoryview(f).cast("B") for f in frames]
        except TypeError as exc:
            raise CodecError("a per-tensor message is a list of byte frames") from exc
        if not views:
            raise CodecError("per-tensor message without frames")
        r = Reader(views[0])
        if bytes(r.take(2)) != _MAGIC or r.byte() != _VERSION:
            raise CodecError("not a per-tensor message (bad magic or version)")
        n = r.varint(len(self.shapes), "tensor count")
        if n != len(self.shapes):
            raise CodecError(f"{n} tensors, expected {len(self.shapes)}")
        total = sum(v.nbytes for v in views)
        lengths = [r.varint(total, "blob length") for _ in range(n)]
        views[0] = views[0][r.pos:]
        if sum(lengths) != total - r.pos:
            raise CodecError(f"index declares {sum(lengths)} bytes of blobs, "
                             f"{total - r.pos} follow")
        out = []
        for codec, blob, shape in zip(self.codecs, _cut(views, lengths), self.shapes):
            t = codec.decode(blob, sender, shape)
            if tuple(t.shape) != shape:
                raise CodecError(f"tensor of shape {tuple(t.shape)}, expected {shape}")
            out.append(t.reshape(-1))
        return torch.cat(out)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        from .feedback import codec_state

        return {"parts": [codec_state(c) for c in self.codecs]}

    def restore(self, state: dict) -> None:
        from .feedback import restore_codec

        parts = state.get("parts")
        if not isinstance(parts, list) or len(parts) != len(self.codecs):
            raise ValueError("per-tensor codec state does not match the tensors")
        for c, s in zip(self.codecs, parts):
            restore_codec(c, s)


def _cut(views: list, lengths: list):
    """Each length's bytes from the frames in order, as a list of views (a blob may
    span frames); the lengths add up to the bytes there (checked by the caller)."""
    at, off = 0, 0
    for n in lengths:
        pieces = []
        while n:
            while views[at].nbytes == off:  # a frame used up (or empty): the next one
                at, off = at + 1, 0
            take = min(n, views[at].nbytes - off)
            pieces.append(views[at][off:off + take])
            off, n = off + take, n - take
        yield pieces
