"""The reference inputs on which the CABAC bound and speed are stated (issue 3).

(a) Laplacian weights, scale 0.02, quantised with step Δ = 2⁻⁸;
(b) a 1 %-sparse update with N(0, std²) values, quantised with Δ = 2⁻¹⁰.
Shared by ``tests/test_cabac.py`` and ``benchmarks/bench_cabac.py``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["laplace_levels", "sparse_levels"]


def laplace_levels(n: int, seed: int = 0) -> np.ndarray:
    """Input (a): Laplacian weights, scale 0.02, step 2^-8, as int32 levels."""
    w = np.random.default_rng(seed).laplace(0.0, 0.02, n)
    return np.round(w / 2.0**-8).astype(np.int32)


def sparse_levels(n: int, std: float = 1e-3, seed: int = 1) -> np.ndarray:
    """Input (b): a 1 % sparse update with N(0, std^2) values, step 2^-10, as int32 levels."""
    rng = np.random.default_rng(seed)
    v = np.zeros(n)
    k = n // 100
    idx = rng.choice(n, k, replace=False)
    v[idx] = rng.normal(0.0, std, k)
    return np.round(v / 2.0**-10).astype(np.int32)
