"""The intermediate representation that flows between codec stages.

A codec is a pipeline of stages, in this order (each optional, at least one)::

    transform  (sparsifier: topk, randk, threshold, sbc, stc  |  low rank: powersgd)
    quantiser  (none, fp16, bf16, quant, uniform, qsgd, terngrad, sign)
    positions  (golomb; raw uint32 indices when absent)
    lossless   (deflate, bz2, lzma on the serialised body | cabac on the integer levels)

The first stages turn the flat float32 tensor into an :class:`Intermediate`:

* ``positions``: sorted distinct int64 indices of the entries sent, or ``None``
  for a dense tensor;
* ``values``: one value per position (or per entry, when dense), either
  :class:`Floats` (float32, float16 or bfloat16 bits) or :class:`Levels`
  (integers with one float64 ``scale``: value = level · scale);
* ``rank`` > 0 marks PowerSGD factors: the values are P (rows×r) then Q (cols×r);
  or, one-sided (``powersgd:R:alternate``), ``side`` 1: the values are M·F
  (rows×r) for the ``known`` factor F (cols×r), side 2: Mᵀ·F (cols×r) for F
  (rows×r); ``chain`` is the message's id field (module ``lowrank``).

:func:`reconstruct` is the *only* way back to a dense float32 tensor.  Encode
and decode both call it on identical intermediates, so a codec's reconstruction
at encode time equals what the receiver decodes, bit for bit (error feedback
relies on this).  Zero levels of a sparse intermediate are dropped from the
support, so a sparse level intermediate never sends a zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dq import dequant
from .errors import CodecError
from .wire import PACK_WIDTHS, Reader, Writer, pack_uint, packed_nbytes, unpack_uint

__all__ = ["Floats", "Levels", "Intermediate", "reconstruct", "write_values", "read_values",
           "unit_scale", "F32", "F16", "BF16"]

F32, F16, BF16 = 0, 1, 2
_PACKED, _SIGNS, _CABAC = 8, 9, 10
#: Flag on a level kind: its scale follows as float32 (exact), not float64.
_SCALE32 = 0x10
_NP_DTYPES = {F32: "<f4", F16: "<f2", BF16: "<u2"}
_INT32 = 2**31 - 1


@dataclass
class Floats:
    data: np.ndarray  # float32, float16, or uint16 holding bfloat16 bits
    dtype: int = F32

    def as_float32(self) -> np.ndarray:
        if self.dtype == BF16:
            return (self.data.astype(np.uint32) << 16).view(np.float32)
        return self.data.astype(np.float32, copy=False)


@dataclass
class Levels:
    levels: np.ndarray  # integers; the value is level * scale
    scale: float

    def as_float32(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            out = (self.levels * np.float64(self.scale)).astype(np.float32)
        if not np.isfinite(out).all():
            raise CodecError("levels times scale overflow float32")
        return out


class DQLevels(Levels):
    """Levels of the ``dq`` quantiser: each value's reconstruction depends on the
    parities of the levels before it (:mod:`~p2pfl.compression.dq`)."""

    def as_float32(self) -> np.ndarray:
        return dequant(self.levels, self.scale)


@dataclass
class Intermediate:
    numel: int
    values: Floats | Levels
    positions: np.ndarray | None = None
    rank: int = 0
    side: int = 0  # one-sided low rank: 1 values = M·F, 2 values = Mᵀ·F (F = known)
    known: np.ndarray | None = None
    chain: int = 0  # powersgd:R:alternate: 2·message id + one-sided, else 0

    def drop_zero_levels(self) -> "Intermediate":
        if self.positions is not None and isinstance(self.values, Levels):
            keep = self.values.levels != 0
            if not keep.all():
                self.positions = self.positions[keep]
                self.values = Levels(self.values.levels[keep], self.values.scale)
        return self

    def densify(self) -> "Intermediate":
        """Scatter a sparse level intermediate into dense levels (for CABAC)."""
        if self.positions is not None:
            dense = np.zeros(self.numel, dtype=np.int64)
            dense[self.positions] = self.values.levels
            self.values = Levels(dense, self.values.scale)
            self.positions = None
        return self


def reconstruct(inter: Intermediate, shape: tuple) -> np.ndarray:
    """The dense flat float32 tensor an intermediate stands for."""
    vals = inter.values.as_float32()
    if inter.rank:
        rows = shape[0]
        cols = inter.numel // rows
        if inter.side == 1:
            p, q = vals.reshape(rows, inter.rank), inter.known
        elif inter.side == 2:
            p, q = inter.known, vals.reshape(cols, inter.rank)
        else:
            p = vals[:rows * inter.rank].reshape(rows, inter.rank)
            q = vals[rows * inter.rank:].reshape(cols, inter.rank)
        with np.errstate(all="ignore"):
            out = (p @ q.T).reshape(-1)
        if not np.isfinite(out).all():
            raise CodecError("low-rank factors overflow float32")
        return out
    if inter.positions is None:
        return np.array(vals, dtype=np.float32, copy=True)
    out = np.zeros(inter.numel, dtype=np.float32)
    out[inter.positions] = vals
    return out


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(u: int) -> int:
    return u // 2 if u % 2 == 0 else -(u + 1) // 2


def write_values(w: Writer, values: Floats | Levels, cabac=None) -> None:
    """Serialise values; ``cabac`` is the level coder function when CABAC is the last stage."""
    if isinstance(values, Floats):
        w.byte(values.dtype)
        w.raw(np.ascontiguousarray(values.data, dtype=_NP_DTYPES[values.dtype]))
        return
    lv = values.levels
    if lv.dtype != np.int32 and lv.size and (lv.min() < -_INT32 or lv.max() > _INT32):
        raise CodecError("a quantised level does not fit in int32; use a larger step")
    if cabac is not None:  # the coder checks every int32 level's range itself
        _kind_and_scale(w, _CABAC, values.scale)
        w.section(cabac(lv.astype(np.int32, copy=False)))
        return
    lo, hi = (int(lv.min()), int(lv.max())) if lv.size else (0, 0)
    if lv.size and lo == -1 and hi == 1 and not np.any(lv == 0):
        _kind_and_scale(w, _SIGNS, values.scale)
        w.raw(np.packbits(lv > 0).tobytes())
        return
    width = next(wd for wd in PACK_WIDTHS if (hi - lo) < (1 << wd))
    _kind_and_scale(w, _PACKED, values.scale)
    w.varint(_zigzag(lo))
    w.byte(width)
    w.raw(pack_uint(lv - lo, width))


def unit_scale(mean: float) -> float:
    """The scale of levels that are all ±1 (STC's μ, SBC's μ±, sign's ‖x‖₁/d), as
    float32: ±1 times it rounds to float32 anyway, so the reconstruction is the
    same to the bit, and the scale travels in 4 bytes instead of 8."""
    return float(np.float32(mean))


def _kind_and_scale(w: Writer, kind: int, scale) -> None:
    """The level kind byte and the scale: 4 bytes when float32 holds the scale exactly
    (STC's mean magnitude of float32 values, a power-of-two step), else 8."""
    scale = float(scale)
    if abs(scale) <= 3e38 and float(np.float32(scale)) == scale:  # (no overflow warning)
        w.byte(kind | _SCALE32)
        w.f32(scale)
    else:
        w.byte(kind)
        w.f64(scale)


def read_values(r: Reader, count: int, cabac=None) -> Floats | Levels:
    """Inverse of :func:`write_values` for ``count`` values; checks sizes before allocating."""
    kind = r.byte()
    if kind in _NP_DTYPES:
        size = 4 if kind == F32 else 2
        data = np.frombuffer(r.take(count * size), dtype=_NP_DTYPES[kind])
        return Floats(data, kind)
    scale32, kind = kind & _SCALE32, kind & ~_SCALE32
    if kind not in (_PACKED, _SIGNS, _CABAC):
        raise CodecError(f"unknown value encoding {kind | scale32}")
    scale = r.f32() if scale32 else r.f64()
    if (kind == _CABAC) != (cabac is not None):
        raise CodecError("CABAC-coded levels in a blob of a codec without CABAC, or vice versa")
    if kind == _CABAC:
        levels = cabac(bytes(r.section(r.remaining, "CABAC section")), count)
        return Levels(np.asarray(levels, dtype=np.int64), scale)
    if kind == _SIGNS:
        bits = np.unpackbits(np.frombuffer(r.take(packed_nbytes(count, 1)), np.uint8),
                             count=count)
        return Levels(bits.astype(np.int64) * 2 - 1, scale)
    lo = _unzigzag(r.varint(2**33, "level offset"))
    width = r.byte()
    if width not in PACK_WIDTHS or not -_INT32 - 1 <= lo <= _INT32:
        raise CodecError(f"bad level packing (offset {lo}, width {width})")
    u = unpack_uint(r.take(packed_nbytes(count, width)), count, width)
    # the encoder's levels fit in int32 (write_values); a wide packing may hold more
    if lo + (1 << width) - 1 > _INT32 and u.size and int(u.max()) + lo > _INT32:
        raise CodecError(f"a packed level exceeds int32 (offset {lo}, width {width})")
    return Levels(u + lo, scale)
