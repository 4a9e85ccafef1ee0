"""Rate–distortion optimised quantisation for the CABAC level coder (``quant:STEP:rd=λ``).

DeepCABAC (Wiedemann et al., IEEE JSTSP 2020, eq. 7, with all importance weights
η_i = 1) chooses each level q_i to minimise the distortion plus λ times the rate
the coder will spend on it, instead of rounding to the nearest level::

    q_i = argmin_q  (w_i/Δ − q)² + λ · R(q | context_i)

Distortion is in units of Δ², so λ is dimensionless: λ = 0 is plain rounding.
The candidates are the nearest level, the next one towards zero, and zero
(larger magnitudes only cost more of both).  R is the coder's own rate under its
binarisation (cabac.py): the significance flag in its context (the classes of
the two previous levels), one bit of sign, the unary greater-than flags with
their per-index, per-sign probabilities, and an Exp-Golomb remainder past G.
The probabilities are those the adaptive contexts settle at on the levels being
coded: estimated from the nearest-level rounding, then once more from the
first pass's choice.  A context's rate thus comes from counts over the whole
tensor (the coder adapts over a window, so this is its stationary rate), and the
context of a level is taken from its neighbours' nearest levels (choices are
made together, not one after the other, which keeps the pass vectorised).
"""
from __future__ import annotations

import numpy as np

from ._cabac_model import G

__all__ = ["rdoq_levels"]

TABLE_MAX = 1 << 16  # largest magnitude whose rate is tabled (2 x 65,537 floats, 1 MiB)


def _bits(p_one: np.ndarray, bit: int) -> np.ndarray:
    """−log2 of the probability of ``bit`` under P(1) = ``p_one`` (clipped)."""
    p = np.clip(p_one if bit else 1.0 - p_one, 1e-6, 1.0)
    return -np.log2(p)


def _sig_contexts(levels: np.ndarray) -> np.ndarray:
    """The significance context of each level: 3·class(prev) + class(prevprev)."""
    cls = np.where(levels > 0, 2, np.where(levels < 0, 1, 0)).astype(np.int8)
    prev = np.concatenate([[0], cls[:-1]])
    prevprev = np.concatenate([[0, 0], cls[:-2]])[:levels.size]
    return 3 * prev + prevprev


def _rates(levels: np.ndarray, ctx: np.ndarray):
    """Rates under the statistics of ``levels``: of zero and of a nonzero level per
    context, and the per-sign tables of the greater-than flags, ``up`` and ``stop``
    (:func:`_magnitude_bits`; the sign is excluded from the context rates)."""
    sig = levels != 0
    ones = np.bincount(ctx, weights=sig, minlength=9)
    total = np.bincount(ctx, minlength=9)
    p_sig = (ones + 0.5) / (total + 1.0)
    mags = np.abs(levels[sig])
    neg = levels[sig] < 0
    # P(|v| > j + 1 | |v| > j), j = 0..G-1, per sign
    up, stop = np.zeros((2, G + 1)), np.zeros((2, G + 1))
    for s in (0, 1):
        # above[j] = how many magnitudes exceed j, from one histogram (past G: one bin)
        hist = np.bincount(np.minimum(mags[neg == bool(s)], G + 1).astype(np.int64),
                           minlength=G + 2)
        above = np.concatenate([np.cumsum(hist[::-1])[::-1][1:], [0]]).astype(np.float64)
        p_gt = (above[1:G + 1] + 0.5) / (above[:G] + 1.0)
        up[s] = np.concatenate([[0.0], np.cumsum(_bits(p_gt, 1))])  # gt flags 1 up to j
        stop[s] = np.concatenate([_bits(p_gt, 0), [0.0]])  # the terminating 0 (none past G)
    return _bits(p_sig, 0), _bits(p_sig, 1), up, stop


def _magnitude_bits(up: np.ndarray, stop: np.ndarray, neg: np.ndarray,
                    m: np.ndarray) -> np.ndarray:
    """Bits of magnitudes ``m`` ≥ 1 of signs ``neg``: the greater-than flags, the
    Exp-Golomb remainder past G, and the sign bin."""
    j = np.minimum(m - 1, G)
    eg = np.where(m > G, 2 * np.floor(np.log2(np.maximum(m - G, 1))) + 1, 0.0)
    return up[neg, j] + stop[neg, j] + eg + 1.0


def _magnitude_rates(up: np.ndarray, stop: np.ndarray, neg: np.ndarray, top: int):
    """``rate(m)``: :func:`_magnitude_bits` of each level's magnitude ``m`` (0: unused),
    looked up in a table up to ``top`` when that is at most ``TABLE_MAX``, else
    evaluated per level: a small step over large weights (quant:1e-12) made the table
    terabytes.  Both give the same bits."""
    if top > TABLE_MAX:
        return lambda m: _magnitude_bits(up, stop, neg, np.maximum(m, 1))
    table = np.zeros((2, top + 1))
    table[:, 1:] = _magnitude_bits(up, stop, np.array([[0], [1]]), np.arange(1, top + 1))
    return lambda m: table[neg, np.maximum(m, 0)]


def rdoq_levels(x: np.ndarray, step: float, lam: float, passes: int = 2) -> np.ndarray:
    """Levels minimising (x/Δ − q)² + λ·R(q) (module docstring); int64."""
    u = x.astype(np.float64) / step
    nearest = np.rint(u)
    if lam <= 0 or u.size == 0:
        return nearest.astype(np.int64)
    a = np.abs(u)
    m0 = np.abs(nearest).astype(np.int64)
    neg = (u < 0).astype(np.int64)
    ctx = _sig_contexts(nearest)
    chosen = nearest
    for _ in range(passes):
        zero_bits, sig_bits, up, stop = _rates(chosen, ctx)
        rate = _magnitude_rates(up, stop, neg, int(m0.max(initial=1)))
        best = a * a + lam * zero_bits[ctx]  # q = 0
        levels = np.zeros(u.size, dtype=np.int64)
        for m in (m0 - 1, m0):  # towards zero, nearest
            ok = m >= 1
            cost = (a - m) ** 2 + lam * (sig_bits[ctx] + rate(m))
            take = ok & (cost < best)
            best = np.where(take, cost, best)
            levels = np.where(take, m, levels)
        chosen = np.where(neg == 1, -levels, levels)
    return chosen.astype(np.int64)
