"""The codec: a pipeline of stages with an exact, self-describing wire format.

Blob layout (``b"".join(frames)``)::

    header          see wire.write_header (magic, stage ids, dtype, shape; or one
                    byte inside a per-tensor message)
    [raw_len]       varint, only with a byte compressor; the rest is compressed
    flags           1 byte: bit 0 sparse, bit 1 low rank, bit 2 chained (with bit 1)
    [rank]          varint, low rank only
    [chain]         varint 2·id + one-sided, chained only (powersgd:R:alternate)
    [k, positions]  varint k, then the position coder's bytes; sparse only
    values          intermediate.write_values

The sum of the frame lengths is the wire size.  Large float payloads are
returned as zero-copy frames.  Decoding validates every declared size before
allocating and raises :class:`CodecError` on anything malformed.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import CodecError
from .intermediate import Floats, Intermediate, read_values, reconstruct, write_values
from .positions import RawPositions
from .wire import MAX_NUMEL, Reader, Writer, as_buffer, read_header, write_header

__all__ = ["Codec", "wire_size"]

_SPARSE, _LOWRANK, _CHAINED = 1, 2, 4


def wire_size(frames) -> int:
    """Exact number of bytes on the wire for a blob's frames."""
    return sum(memoryview(f).nbytes for f in frames)


class Codec:
    """An encode/decode pair built from parsed stages (use ``make_codec``).

    ``encode(tensor) -> frames``; ``decode(frames) -> float32 tensor`` of the
    original shape.  ``biased`` / ``stochastic`` hold if any stage is.
    Stateful stages (PowerSGD's warm start) are reset by ``reset()``.
    """

    def __init__(self, stages: list, max_numel: int = MAX_NUMEL) -> None:
        by_role = {s.role: s for s in stages}
        self.stages = list(stages)
        self.transform = by_role.get("transform")
        self.quantiser = by_role.get("quantise")
        self.position_coder = by_role.get("positions") or RawPositions()
        self.lossless = by_role.get("lossless")
        self.cabac = self.lossless if getattr(self.lossless, "codes_levels", False) else None
        if self.cabac is not None and getattr(self.quantiser, "dependent", False):
            self.cabac.dependent = True  # CABAC's dq mode follows the quantiser's states
        self.compressor = None if self.cabac else self.lossless
        self.ids = bytes(s.wire_id for s in stages)
        self.max_numel = max_numel

    @property
    def name(self) -> str:
        return "+".join(s.spec for s in self.stages)

    @property
    def biased(self) -> bool:
        return any(s.biased for s in self.stages)

    @property
    def stochastic(self) -> bool:
        return any(s.stochastic for s in self.stages)

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"

    def reset(self) -> None:
        for s in self.stages:
            if hasattr(s, "reset"):
                s.reset()

    def restart(self) -> None:
        """A receiver lost a message of a chain: the next message refers to none
        (plain contexts for temporal CABAC; a plain (P, Q) for powersgd:R:alternate)."""
        for stage in (self.cabac, self.transform):
            if hasattr(stage, "restart"):
                stage.restart()

    # -- encoding ---------------------------------------------------------------
    def encode(self, tensor: torch.Tensor) -> list:
        return self.encode_with_reconstruction(tensor, want_reconstruction=False)[0]

    def encode_with_reconstruction(self, tensor: torch.Tensor, want_reconstruction=True,
                                   implicit=False):
        """Frames plus the float32 tensor the receiver will decode (bit-exact).

        ``implicit``: a one-byte header, for a receiver that knows the shape
        (``decode(..., shape=)``)."""
        x, shape, dtype = _flat_float32(tensor, self.max_numel)
        inter = self.intermediate(x, shape)
        w = Writer()
        write_header(w, self.ids, dtype, shape, implicit)
        body = Writer() if self.compressor else w
        self._write_body(body, inter)
        if self.compressor:
            raw = body.tobytes()
            w.varint(len(raw))
            w.raw(self.compressor.compress(raw))
        recon = None
        if want_reconstruction:
            recon = torch.from_numpy(reconstruct(inter, shape)).reshape(shape)
        return w.frames(), recon

    def intermediate(self, x: np.ndarray, shape: tuple) -> Intermediate:
        """Run the lossy stages on a flat float32 array."""
        t = self.transform
        if t is None:
            inter = Intermediate(x.size, Floats(x))
        elif t.role == "transform" and hasattr(t, "compress"):
            inter = t.compress(x, shape)
        else:
            positions, values = t.select(x)
            inter = Intermediate(x.size, values, positions)
        if self.quantiser is not None:
            inter.values = self.quantiser.quantise(inter.values.as_float32())
        inter.drop_zero_levels()
        if self.cabac is not None and "positions" not in {s.role for s in self.stages}:
            inter.densify()
        if inter.chain:
            t.sent(inter, shape)
        return inter

    def _write_body(self, w: Writer, inter: Intermediate) -> None:
        w.byte((_SPARSE if inter.positions is not None else 0) |
               (_LOWRANK if inter.rank else 0) | (_CHAINED if inter.chain else 0))
        if inter.rank:
            w.varint(inter.rank)
        if inter.chain:
            w.varint(inter.chain)
        if inter.positions is not None:
            w.varint(inter.positions.size)
            self.position_coder.write(w, inter.positions, inter.numel)
        write_values(w, inter.values, self.cabac.encode_levels if self.cabac else None)

    # -- decoding ---------------------------------------------------------------
    def decode(self, frames, sender=None, shape=None) -> torch.Tensor:
        """The tensor of a blob; ``sender`` names the stream for ``cabac:temporal``;
        ``shape``: the expected one, which lets an implicit header stand for it."""
        r = Reader(as_buffer(frames))
        dtype, shape, numel = read_header(r, self.ids, self.max_numel, shape)
        if self.compressor:
            raw_len = r.varint(8 * numel + 256, "body length")
            r = Reader(self.compressor.decompress(r.take(r.remaining), raw_len))
        inter = self._read_body(r, shape, numel, sender)
        r.done()
        out = torch.from_numpy(reconstruct(inter, shape)).reshape(shape)
        if inter.chain:
            self.transform.received_from(sender, inter, shape)
        return out

    def _read_body(self, r: Reader, shape: tuple, numel: int, sender=None) -> Intermediate:
        flags = r.byte()
        if (flags & ~(_SPARSE | _LOWRANK | _CHAINED) or flags & _SPARSE and flags & _LOWRANK
                or flags & _CHAINED and not flags & _LOWRANK):
            raise CodecError(f"bad body flags {flags}")
        if flags & _CHAINED and not getattr(self.transform, "alternate", False):
            raise CodecError("a chained low-rank body for a codec without powersgd:R:alternate")
        positions, rank, count, side, known, chain = None, 0, numel, 0, None, 0
        if flags & _LOWRANK:
            if len(shape) < 2 or numel == 0:
                raise CodecError("low-rank body for a tensor that is not a matrix")
            if not hasattr(self.transform, "rank"):
                raise CodecError("a low-rank body for a codec without powersgd")
            rows, cols = shape[0], numel // shape[0]
            rank = r.varint(min(rows, cols, self.transform.rank), "rank")
            count = rank * (rows + cols)
            if rank == 0 or count >= numel:  # the encoder sends such a matrix dense
                raise CodecError(f"low-rank body of rank {rank} for a {rows}x{cols} matrix")
            if flags & _CHAINED:
                chain = r.varint(1 << 62, "chain id")
                side, known = self.transform.chained(chain, sender, shape, rank)
                count = rank * (rows if side == 1 else cols) if side else count
        if flags & _SPARSE:
            count = r.varint(numel, "k")
            positions = self.position_coder.read(r, count, numel)
        cabac = None if self.cabac is None else (
            lambda data, n: self.cabac.decode_levels(data, n, sender))
        values = read_values(r, count, cabac)
        if self.quantiser is not None:
            values = self.quantiser.received(values)
        return Intermediate(numel, values, positions, rank, side, known, chain)


def _flat_float32(tensor, max_numel: int):
    if not isinstance(tensor, torch.Tensor):
        tensor = torch.as_tensor(tensor)
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int8, torch.int16,
                                                           torch.int32, torch.int64)):
        raise CodecError(f"cannot encode a tensor of dtype {tensor.dtype}")
    if tensor.numel() > max_numel:
        raise CodecError(f"tensor of {tensor.numel()} entries exceeds the limit {max_numel}")
    shape = tuple(tensor.shape)
    flat = tensor.detach().to("cpu", torch.float32).contiguous().reshape(-1)
    if flat.numel() and flat.data_ptr() == tensor.data_ptr():
        flat = flat.clone()  # frames must not alias the caller's tensor
    return flat.numpy(), shape, tensor.dtype
