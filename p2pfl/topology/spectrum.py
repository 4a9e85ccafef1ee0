"""The spectral gap of a mixing matrix: Lanczos iterations on the sparse matrix, or
a dense eigendecomposition for small graphs and where Lanczos does not converge.

The gap ``delta = 1 - |lambda_2(W)|`` is the rate that bounds consensus in gossip
(ALGORITHMS.md, "Peer-to-peer gossip").  For a symmetric, doubly stochastic ``W``
the all-ones vector is the eigenvector of ``lambda_1 = 1``, so ``|lambda_2|`` is the
largest eigenvalue modulus of ``W`` restricted to the vectors of mean 0.  Lanczos
(Golub and Van Loan, *Matrix Computations*, 4th ed., section 10.1) finds the two
extreme eigenvalues of that restriction from matrix-vector products alone, in
O(edges) time and O(n) memory a step; no reorthogonalisation is needed for the
extremes (Paige: a Ritz value whose residual bound ``|beta_k s_k|`` is small is
that close to an eigenvalue, and lost orthogonality only repeats converged ones).

Where Lanczos does not converge above :data:`DENSE_GAP_MAX_NODES` nodes, a circulant
matrix (each row the one before, shifted: a ring, ``exponential:N``) still has its gap
in closed form: its eigenvalues are λ_k = Σ_j c_j cos(2π·jk/n) for the first row c
(Gray, "Toeplitz and Circulant Matrices: A Review", 2006, chapter 3), taken as
1 − λ_k = Σ_j 2·c_j·sin²(π·jk/n) so that a gap of 1e-8 keeps its digits.
"""

from __future__ import annotations

import numpy as np

from .generators import _need
from .mixing import Mixing

__all__ = ["DENSE_GAP_MAX_NODES", "LANCZOS_MIN_NODES", "LANCZOS_STEPS", "spectral_gap"]

#: Above this many nodes a :class:`Mixing`'s gap is found by Lanczos first (10 ms
#: where the dense eigendecomposition takes 3.9 s, ``torus:64x64``).
LANCZOS_MIN_NODES = 512

#: The most nodes whose gap may be a dense O(n^3) eigendecomposition (3.9 s at
#: 4,096 nodes, about 280 s at 16,384 here): where Lanczos does not converge.
DENSE_GAP_MAX_NODES = 4096

#: Lanczos steps before it is given up as not converged: a graph whose largest
#: eigenvalues below 1 are very close together (a ring of thousands of nodes: 4.4e-6
#: apart at 3,000) needs more.
LANCZOS_STEPS = 1024


def spectral_gap(W, *, steps=None, rtol=1e-4):
    """Spectral gap ``delta = 1 - |lambda_2(W)|`` of a mixing matrix.

    Parameters
    ----------
    W : Mixing or array_like
        A :class:`~p2pfl.topology.mixing.Mixing` (symmetric, doubly stochastic), or
        a square matrix (symmetric ones use ``numpy.linalg.eigvalsh``).  A Mixing
        of more than :data:`LANCZOS_MIN_NODES` nodes is tried by Lanczos first, and
        falls back to the dense eigendecomposition up to
        :data:`DENSE_GAP_MAX_NODES`.
    steps : int, optional
        At most this many Lanczos steps (default :data:`LANCZOS_STEPS`).
    rtol : float
        Lanczos stops when the residual bounds put the gap within this relative
        error (in practice within 2e-8: ``benchmarks/lanczos_gap.py``).

    Returns
    -------
    float or None
        One minus the second largest eigenvalue modulus, clipped at 0 (1.0 for a
        1x1 matrix); larger means faster consensus.  None when Lanczos did not
        converge and the matrix is too large for the dense way.
    """
    if not isinstance(W, Mixing):
        return _dense_gap(W)
    gap = None
    if W.n > LANCZOS_MIN_NODES:
        gap = _lanczos_gap(W, LANCZOS_STEPS if steps is None else steps, rtol)
    if gap is None and W.n <= DENSE_GAP_MAX_NODES:
        gap = _dense_gap(W.toarray())
    if gap is None:
        gap = _circulant_gap(W)
    return gap


def _circulant_gap(m: Mixing):
    """The gap of a symmetric circulant ``m`` in closed form (module docstring), or
    None when ``m`` is not one.  Its self-weights do not enter (each row sums to 1),
    so their last bits, which differ between rows summed in another order, do not
    matter."""
    counts = np.diff(m.indptr)
    d = int(counts[0])
    if not (counts == d).all() or d == 0:
        return None
    rows, cols = m.entries()
    offsets = ((cols - rows) % m.n).reshape(m.n, d)
    order = np.argsort(offsets, axis=1)
    offsets = np.take_along_axis(offsets, order, axis=1)
    weights = np.take_along_axis(m.data.reshape(m.n, d), order, axis=1)
    if not ((offsets == offsets[0]).all() and (weights == weights[0]).all()):
        return None
    c = np.zeros(m.n)
    c[offsets[0]] = weights[0]
    if not np.array_equal(c[1:], c[:0:-1]):  # c_j = c_(n-j): symmetric
        return None
    ks = np.arange(1, m.n)
    drop = np.zeros(m.n - 1)  # 1 − λ_k for k = 1..n−1, by the offsets in turn
    for j, w in zip(offsets[0].tolist(), weights[0].tolist()):
        drop += 2.0 * w * np.sin(np.pi * ((j * ks) % m.n) / m.n) ** 2
    return float(max(0.0, np.minimum(drop, 2.0 - drop).min()))


def _dense_gap(W):
    W = np.asarray(W, dtype=float)
    _need(W.ndim == 2 and W.shape[0] == W.shape[1],
          f"mixing matrix must be square, got shape {W.shape}")
    if W.shape[0] < 2:
        return 1.0
    eig = np.linalg.eigvalsh(W) if np.allclose(W, W.T) else np.linalg.eigvals(W)
    moduli = np.sort(np.abs(eig))[::-1]
    return float(max(0.0, 1.0 - moduli[1]))


def _lanczos_gap(m: Mixing, steps: int, rtol: float):
    """Lanczos on ``P W P`` (``P`` removes the mean) from a seeded random start; the
    gap from its extreme Ritz values once their residual bounds are within ``rtol``
    of it, checked at 32, 64, 128, ... steps and the last."""
    q = np.random.default_rng(0).standard_normal(m.n)
    q -= q.mean()
    q /= np.linalg.norm(q)
    q_prev, beta = np.zeros(m.n), 0.0
    alphas, betas = [], []
    check = 32
    for k in range(1, min(steps, m.n - 1) + 1):
        v = m.matvec(q)
        v -= v.mean()  # rounding must not bring back the all-ones direction
        alphas.append(float(q @ v))
        v -= alphas[-1] * q + beta * q_prev
        beta = float(np.linalg.norm(v))
        exhausted = beta <= 1e-12 or k == min(steps, m.n - 1)
        if k == check or exhausted:
            check *= 2
            gap = _ritz_gap(alphas, betas, 0.0 if beta <= 1e-12 else beta, rtol)
            if gap is not None or exhausted:
                return gap
        betas.append(beta)
        q_prev, q = q, v / beta
    return None


def _ritz_gap(alphas, betas, beta, rtol):
    """The gap from the tridiagonal ``T_k`` (diagonal ``alphas``, off-diagonal
    ``betas``) if the residual bounds ``beta |s_k|`` of its extreme Ritz values fix
    it within ``rtol``, else None.  Ritz values lie inside the spectrum, so the
    modulus is at least the Ritz one and at most that plus its bound."""
    T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    theta, S = np.linalg.eigh(T)
    bound = beta * np.abs(S[-1, [0, -1]])
    low = max(theta[-1], -theta[0])
    high = max(theta[-1] + bound[1], -theta[0] + bound[0])
    if high - low > rtol * max(1.0 - high, 0.0):
        return None
    return float(max(0.0, 1.0 - low))
