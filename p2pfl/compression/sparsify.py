"""Sparsifiers: choose a support (sorted positions) and the values sent there.

k = ⌈p·n⌉ for a tensor of n entries (ALGORITHMS.md, notation).  A sparsifier
returns ``(positions, values)``; values are :class:`Floats` (topk, randk,
threshold, to be quantised by a later stage) or :class:`Levels` (sbc, stc).
"""
from __future__ import annotations

import math

import numpy as np

from .base import Stage, check_finite, float_arg
from ..errors import ConfigError
from .intermediate import F32, Floats, Levels, unit_scale

__all__ = ["TopK", "RandK", "Threshold", "SBC", "STC", "count_k", "top_k_indices"]


def count_k(p: float, n: int) -> int:
    """k = ⌈p·n⌉, at least 1 for a non-empty tensor.  A product within a few ulps of
    an integer is that integer (0.07·100 = 7.000…1 is 7), and only then: a relative
    guard would also round a true fraction down at tens of millions of entries."""
    if n == 0:
        return 0
    x = p * n
    whole = round(x)
    k = whole if abs(x - whole) <= 4 * math.ulp(x) else math.ceil(x)
    return min(n, max(1, k))


def top_k_indices(a: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k largest entries of ``a`` (ties broken arbitrarily)."""
    if k >= a.size:
        return np.arange(a.size, dtype=np.int64)
    idx = np.argpartition(a, a.size - k)[a.size - k:]
    return np.sort(idx).astype(np.int64)


class _Fraction(Stage):
    role = "transform"
    min_args = 1

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.p = float_arg(self, args[0], "P", 0.0, 1.0)


class _Scoped(_Fraction):
    """A fraction with a scope for per-tensor exchange: ``:tensor`` (the default, as in
    the STC paper, k = ⌈p·n_l⌉ for each tensor l) or ``:global`` (one threshold for the
    whole model, so each tensor keeps its share of the model's k largest entries)."""
    max_args = 2

    def __init__(self, args, rng):
        super().__init__(args, rng)
        if len(args) == 2 and args[1] not in ("tensor", "global"):
            raise ConfigError(f"{self.name} takes tensor or global as its optional second "
                              f"argument (the scope of k), got {args[1]!r}")
        self.scope = args[1] if len(args) == 2 else "tensor"


class TopK(_Scoped):
    """``topk:P``: the k entries of largest magnitude, sent as they are.
    ‖C(x) − x‖² ≤ (1 − k/d)‖x‖² (CHOCO compressor condition, δ = k/d)."""
    name, wire_id, biased = "topk", 16, True

    def select(self, x: np.ndarray):
        check_finite(x, self)
        idx = top_k_indices(np.abs(x), count_k(self.p, x.size))
        return idx, Floats(x[idx], F32)


class RandK(_Fraction):
    """``randk:P`` or ``randk:P:scaled``: k positions drawn uniformly without
    replacement.  Unscaled (the default, used by CHOCO's random-1%) it is biased
    but contractive in expectation, E‖C(x) − x‖² = (1 − k/d)‖x‖²; ``scaled``
    multiplies by d/k, which makes it unbiased (and no longer contractive)."""
    name, wire_id, stochastic = "randk", 17, True
    max_args = 2

    def __init__(self, args, rng):
        super().__init__(args, rng)
        if len(args) == 2 and args[1] != "scaled":
            raise ConfigError(f"randk takes 'scaled' as its optional second argument, "
                              f"got {args[1]!r}")
        self.scaled = len(args) == 2

    @property
    def biased(self) -> bool:
        return not self.scaled

    def select(self, x: np.ndarray):
        check_finite(x, self)
        k = count_k(self.p, x.size)
        idx = np.sort(self.rng.choice(x.size, size=k, replace=False)).astype(np.int64)
        vals = x[idx] * np.float32(x.size / k) if self.scaled and k else x[idx]
        return idx, Floats(vals.astype(np.float32), F32)


class Threshold(Stage):
    """``threshold:T``: every entry with |x| ≥ T (T > 0); the support size varies.
    Biased and not contractive in general (C(x) = 0 when all |x| < T)."""
    name, wire_id, role, biased = "threshold", 18, "transform", True
    min_args = 1

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.t = float_arg(self, args[0], "T", 0.0, 1e30)

    def select(self, x: np.ndarray):
        check_finite(x, self)
        idx = np.flatnonzero(np.abs(x) >= self.t).astype(np.int64)
        return idx, Floats(x[idx], F32)


class SBC(_Scoped):
    """``sbc:P``: Sparse Binary Compression (ALGORITHMS.md § SBC; Sattler et al.
    2019): v⁺ = top-k of x, v⁻ = top-k of −x, μ± their means; keep the side with
    the larger mean, all k positions set to μ⁺ (or −μ⁻).  One value + positions:
    levels are all 1 and the signed mean is the scale, so values cost 0 bits."""
    name, wire_id, biased, levels = "sbc", 19, True, True

    def select(self, x: np.ndarray):
        check_finite(x, self)
        k = count_k(self.p, x.size)
        if k == 0:
            return np.zeros(0, np.int64), Levels(np.zeros(0, np.int64), 0.0)
        pos, neg = top_k_indices(x, k), top_k_indices(-x, k)
        mu_pos = float(x[pos].astype(np.float64).mean())
        mu_neg = float(-x[neg].astype(np.float64).mean())
        idx, mu = (pos, mu_pos) if mu_pos >= mu_neg else (neg, -mu_neg)
        if mu == 0:  # an all-zero input: nothing to send, not k zero-valued positions
            return np.zeros(0, np.int64), Levels(np.zeros(0, np.int64), 0.0)
        return idx, Levels(np.ones(k, dtype=np.int64), unit_scale(mu))


class STC(_Scoped):
    """``stc:P``: Sparse Ternary Compression (ALGORITHMS.md § STC; Sattler et al.
    2020): μ = mean of the top-k |T|, T̃ = μ·sign(T) on the top-k support.  One μ
    + positions + one sign bit per non-zero.  We take exactly the top-k indices
    (not 1[|T| ≥ v], which could keep more than k on ties)."""
    name, wire_id, biased, levels = "stc", 20, True, True

    def select(self, x: np.ndarray):
        check_finite(x, self)
        mag = np.abs(x)
        idx = top_k_indices(mag, count_k(self.p, x.size))
        mu = unit_scale(mag[idx].astype(np.float64).mean()) if idx.size else 0.0
        return idx, Levels(np.sign(x[idx]).astype(np.int64), mu)
