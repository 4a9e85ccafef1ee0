"""Dependent (trellis-coded) quantisation, the levels of the ``dq:STEP`` stage.

ALGORITHMS.md, "Entropy coding extensions", dependent quantisation (NNC): two
interleaved scalar quantisers share the step Δ.  Q0 reconstructs level k to
2k·Δ (the even multiples), Q1 to (2k − sgn k)·Δ (the odd multiples, and zero).
A 4-state machine picks the quantiser of each value from the parity of the
levels before it: states 0 and 1 use Q0, states 2 and 3 use Q1, the first value
is read in state 0, and the state after level k is ``NEXT[state][k & 1]``::

    NEXT = ((0, 2), (2, 0), (1, 3), (3, 1))

Each quantiser alone has the step 2Δ, but the union of their grids is Δ, and
the encoder chooses the path through the states by a Viterbi search that
minimises, over the whole sequence, ::

    Σ_i (x_i/Δ − r_i)² + λ · R(k_i | quantiser of i)

where r_i is the reconstruction of k_i in units of Δ.  The candidates of each
value under each quantiser are the two levels whose reconstructions bracket it,
and zero.  λ = 0 (the default) is the pure trellis-coded quantiser, which
minimises distortion alone; λ > 0 weighs in R, the bits of a level of that
magnitude (sign included) under the zeroth-order statistics of the levels that
the previous pass chose for that quantiser (the first pass starts from plain
rounding at step 2Δ).  The search runs in blocks of ``BLOCK`` values: each block
ends in its best state and the next starts there, which bounds memory at
5 bytes per state per value of one block.

The levels are coded by any level coder (CABAC in practice) without change; the
decoder runs the state machine to reconstruct them (:func:`dequant`).  As the
state depends on every level before, the levels must reach the decoder in the
order they were chosen and all of them, zeros included: ``dq`` quantises dense
tensors (and PowerSGD's factors), never the values of a sparsifier.

The C core ``_dq`` does both passes; without it, a pure-Python mirror gives the
same levels and values, slowly (``P2PFL_DQ_PURE=1`` forces it).
"""
from __future__ import annotations

import math

import numpy as np

from ..native import load_extension
from ._cabac_model import DQ_NEXT as NEXT  # the one home of the state machine
from .errors import CodecError

__all__ = ["NEXT", "BLOCK", "trellis_levels", "dequant", "HAVE_C"]

BLOCK = 65536
_UMAX = 1073741820.0  # |x/Δ| below this keeps every candidate level under 2**30
_MMAX_CAP = 4096  # rate table size; larger magnitudes extrapolate


# a stale build with another block size or state machine is not used
_c = load_extension("p2pfl.compression._dq", "P2PFL_DQ_PURE", {"BLOCK": BLOCK, "NEXT": NEXT})
HAVE_C: bool = _c is not None


def _recon(k: int, q: int) -> int:
    return 2 * k - (k > 0) + (k < 0) if q else 2 * k


def rate_tables(levels: np.ndarray, cls: np.ndarray, mmax: int) -> np.ndarray:
    """float64 (2, mmax + 1): bits of a level of magnitude m (sign included) under
    each quantiser, from the zeroth-order statistics of ``levels`` (mmax and above
    pooled in the last entry)."""
    rates = np.empty((2, mmax + 1))
    mags = np.minimum(np.abs(levels.astype(np.int64)), mmax)
    for q in (0, 1):
        h = np.bincount(mags[cls == q], minlength=mmax + 1).astype(np.float64) + 0.5
        rates[q] = -np.log2(h / h.sum())
        rates[q, 1:] += 1.0
    return rates


def trellis_levels(x: np.ndarray, step: float, lam: float = 0.0,
                   passes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(int32 levels, uint8 quantiser of each value) for float32 ``x`` (docstring)."""
    if not (math.isfinite(lam) and lam >= 0):
        raise CodecError(f"dq: lambda must be finite and >= 0, got {lam!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.size
    levels, cls = np.zeros(n, np.int32), np.zeros(n, np.uint8)
    if n == 0:
        return levels, cls
    # max |x / step| (the division is monotonic); NaN or inf make it non-finite
    top = float(np.abs(x).max()) / step
    if not top < _UMAX:
        raise CodecError(f"dq:{step!r} cannot code non-finite values or levels of 2**30 "
                         "or more; use a larger step")
    mmax = int(min(_MMAX_CAP, max(1, top // 2 + 2)))
    if lam > 0:
        start = np.rint(x.astype(np.float64) / step / 2).astype(np.int64)
        rates = rate_tables(start, np.zeros(n, np.uint8), mmax)
        rates[1] = rates[0]
    else:
        rates, passes = np.zeros((2, mmax + 1)), 1
    run = _c.trellis if _c is not None else _trellis_pure
    for k in range(passes):
        if k:
            rates = rate_tables(levels, cls, mmax)
        run(x, float(step), float(lam), rates.reshape(-1), mmax, levels, cls)
    return levels, cls


def dequant(levels: np.ndarray, step: float) -> np.ndarray:
    """float32 values of dq levels (state machine from state 0); CodecError when
    a level is out of int32 or a value overflows float32."""
    lv = np.asarray(levels)
    if lv.size and (int(lv.max()) > 2**31 - 1 or int(lv.min()) < -2**31):
        raise CodecError("dq level out of range")
    lv = np.ascontiguousarray(lv, dtype=np.int32)
    out = np.empty(lv.size, np.float32)
    finite = (_c.dequant if _c is not None else _dequant_pure)(lv, float(step), out)
    if not finite:
        raise CodecError("dq levels times step overflow float32")
    return out


# -- the pure-Python mirror of _dq.c (same arithmetic, same order) ------------------
def _rate_of(rates, mmax: int, q: int, k: int) -> float:
    m = abs(k)
    row = q * (mmax + 1)
    if m <= mmax:
        return float(rates[row + m])
    return float(rates[row + mmax]) + 2.0 * math.log2(m / mmax)


def _candidates(u: float, q: int) -> tuple:
    if not q:
        a = math.floor(u / 2.0)
        return a, a + 1, 0
    if u >= 0:
        a = math.floor((u + 1.0) / 2.0)
        return a, a + 1, 0
    a = math.ceil((u - 1.0) / 2.0)
    return a, a - 1, 0


def _block_pure(xs, step, lam, rates, mmax, lo, hi, s0, levels, cls) -> int:
    inf = math.inf
    cost = [0.0 if s == s0 else inf for s in range(4)]
    back = []
    for i in range(lo, hi):
        u = float(xs[i]) / step
        nc, bk, bs = [inf] * 4, [0] * 4, [0] * 4
        for s in range(4):
            if cost[s] == inf:
                continue
            q = s >> 1
            for k in _candidates(u, q):
                e = u - float(_recon(k, q))
                total = cost[s] + e * e
                if lam > 0:
                    total = total + lam * _rate_of(rates, mmax, q, k)
                ns = NEXT[s][k & 1]
                if total < nc[ns]:
                    nc[ns], bk[ns], bs[ns] = total, k, s
        cost = nc
        back.append((bk, bs))
    best = min(range(4), key=lambda s: (cost[s], s))
    s = best
    for i in range(hi - 1, lo - 1, -1):
        bk, bs = back[i - lo]
        levels[i], cls[i] = bk[s], bs[s] >> 1
        s = bs[s]
    return best


def _trellis_pure(x, step, lam, rates, mmax, levels, cls) -> None:
    s = 0
    xs = x.tolist()
    for a in range(0, len(xs), BLOCK):
        s = _block_pure(xs, step, lam, rates, mmax, a, min(len(xs), a + BLOCK), s, levels, cls)


def _dequant_pure(levels, step, out) -> bool:
    s, rec = 0, []
    for k in levels.tolist():
        rec.append(_recon(k, s >> 1))
        s = NEXT[s][k & 1]
    with np.errstate(over="ignore"):
        out[:] = (np.asarray(rec, dtype=np.float64) * step).astype(np.float32)
    return bool(np.isfinite(out).all())
