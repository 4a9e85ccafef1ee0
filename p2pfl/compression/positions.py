"""Position coding of sparse supports: raw indices and Golomb–Rice gap coding.

A sparse intermediate carries k sorted, distinct positions in [0, n).  A
position coder writes them after the caller has written k, and reads them back
given k and n, checking every declared size against the bytes present.

Golomb coding (ALGORITHMS.md, "Golomb position coding (SBC/STC)"; Sattler et
al. 2019/2020): the gaps g_0 = p_0, g_i = p_i − p_{i−1} − 1 are geometric with
q = (k+1)/(n+1), and the optimal Rice parameter is

    b* = 1 + ⌊log₂( ln(φ−1) / ln(1−q) )⌋,   φ = (1+√5)/2.

Each gap is coded as ⌊g/2^b⌋ in unary (ones closed by a zero) plus its b low
bits.  We store the two parts as separate bit planes, all remainders first,
then all unary codes.  The bits are exactly those of the interleaved Golomb
code, only reordered, which makes both directions vectorised: packing is
``np.packbits`` and cumulative sums, unpacking finds the unary zeros with
``np.flatnonzero``.  Expected cost ≈ b* + 1/(1 − (1−q)^(2^b*)) bits per
position: 8.1 at p = 1%.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Stage
from .errors import CodecError
from .wire import Reader, Writer

__all__ = ["golomb_b", "golomb_expected_bits", "RawPositions", "GolombPositions"]

_PHI = (1 + math.sqrt(5)) / 2
_MAX_B = 31


def golomb_b(k: int, n: int) -> int:
    """The Rice parameter b* for k non-zeros among n entries (ALGORITHMS.md)."""
    q = (k + 1) / (n + 1)
    if q >= 1:
        return 0
    ratio = math.log(_PHI - 1) / math.log1p(-q)
    if ratio < 1:
        return 0
    return min(_MAX_B, 1 + int(math.floor(math.log2(ratio))))


def golomb_expected_bits(k: int, n: int) -> float:
    """Expected bits per position, b* + 1/(1 − (1−q)^(2^b*))."""
    q = (k + 1) / (n + 1)
    b = golomb_b(k, n)
    return b + 1.0 / (1.0 - (1.0 - q) ** (2 ** b)) if q < 1 else 1.0


def _check_sorted(positions: np.ndarray, numel: int) -> np.ndarray:
    if positions.size and (positions[0] < 0 or positions[-1] >= numel
                           or np.any(np.diff(positions) <= 0)):
        raise CodecError("positions are not sorted, distinct and inside the tensor")
    return positions


class RawPositions:
    """The default: each position as a little-endian uint32 (32 bits each)."""

    name = "raw"

    def write(self, w: Writer, positions: np.ndarray, numel: int) -> None:
        w.raw(positions.astype("<u4").tobytes())

    def read(self, r: Reader, k: int, numel: int) -> np.ndarray:
        data = r.take(4 * k)
        return _check_sorted(np.frombuffer(data, dtype="<u4").astype(np.int64), numel)


class GolombPositions(Stage):
    """``golomb``: Golomb–Rice gap coding with the optimal b* (module docstring)."""

    name, wire_id, role = "golomb", 33, "positions"
    max_args = 0

    def write(self, w: Writer, positions: np.ndarray, numel: int) -> None:
        k = positions.size
        b = golomb_b(k, numel)
        gaps = np.diff(positions.astype(np.int64), prepend=-1) - 1
        quot, rem = gaps >> b, gaps & ((1 << b) - 1)
        w.byte(b)
        if b:
            shifts = np.arange(b - 1, -1, -1, dtype=np.int64)
            w.raw(np.packbits(((rem[:, None] >> shifts) & 1).astype(np.uint8)).tobytes())
        # unary: quot[i] ones then a zero; the zeros sit at cumsum(quot + 1) − 1
        zeros_at = np.cumsum(quot + 1) - 1
        nbits = int(zeros_at[-1]) + 1 if k else 0
        bits = np.ones(nbits, dtype=np.uint8)
        bits[zeros_at] = 0
        w.section(np.packbits(bits).tobytes())

    def read(self, r: Reader, k: int, numel: int) -> np.ndarray:
        b = r.byte()
        # The encoder writes b*(k, n); a hostile b would make a small message cost
        # k·b bits to unpack.  One off is allowed: b* floors a float logarithm, which
        # another platform's libm could round the other way at a boundary.
        if abs(b - golomb_b(k, numel)) > 1 or b > _MAX_B:
            raise CodecError(f"Golomb parameter b={b} is not b*={golomb_b(k, numel)} for "
                             f"k={k} of {numel}")
        rem_bytes = r.take((k * b + 7) // 8)
        unary = r.section(r.remaining, "unary section")
        if k == 0:
            if len(unary) or len(rem_bytes):
                raise CodecError("Golomb data for an empty support")
            return np.zeros(0, dtype=np.int64)
        if 8 * len(unary) < k:
            raise CodecError("Golomb unary section too short for the declared k")
        zeros_at = np.flatnonzero(np.unpackbits(np.frombuffer(unary, dtype=np.uint8)) == 0)
        if zeros_at.size < k or (int(zeros_at[k - 1]) + 8) // 8 != len(unary):
            raise CodecError("Golomb unary section does not hold exactly k codes")
        quot = np.diff(zeros_at[:k], prepend=-1) - 1
        rem = np.zeros(k, dtype=np.int64)
        if b:  # most significant bit first, one bit plane at a time (no k×b int64 array)
            bits = np.unpackbits(np.frombuffer(rem_bytes, dtype=np.uint8),
                                 count=k * b).reshape(k, b)
            for j in range(b):
                rem <<= 1
                rem |= bits[:, j]
        if int(quot.max()) > (numel >> b):
            raise CodecError("Golomb gap larger than the tensor")
        positions = np.cumsum((quot << b) + rem + 1) - 1
        if positions[-1] >= numel:
            raise CodecError("Golomb positions run past the end of the tensor")
        return positions
