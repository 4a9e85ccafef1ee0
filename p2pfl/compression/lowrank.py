"""PowerSGD low-rank compression (Vogels, Karimireddy, Jaggi, NeurIPS 2019, Alg. 1).

For a matrix M (a tensor reshaped to (shape[0], −1)) and a warm-start Q
(cols×r)::

    P ← M Q;  P ← orthogonalise(P);  Q ← Mᵀ P;  send P, Q;  M̂ = P Qᵀ

M̂ = P Pᵀ M is the projection of M onto span(P), so ‖M̂ − M‖ ≤ ‖M‖ (biased;
pair it with error feedback, as the paper does).

State (explicit, owned by the stage object): ``warm_start`` maps the matrix
shape (rows, cols) to the last Q.  Use one codec object per tensor stream;
two streams with the same shape would share (and disturb) one warm start.
``reset()`` forgets it.  The first Q, and any all-zero column of a stored Q,
is drawn i.i.d. normal from the codec's seeded generator.

1-D tensors, and matrices where r(rows+cols) ≥ rows·cols, are sent dense.
"""
from __future__ import annotations

import numpy as np

from .base import Stage, check_finite, int_arg
from .intermediate import F32, Floats, Intermediate

__all__ = ["PowerSGD"]


class PowerSGD(Stage):
    """``powersgd:RANK``: one power-iteration step with warm start (module docstring)."""
    name, wire_id, role, biased = "powersgd", 24, "transform", True
    min_args = 1

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.rank = int_arg(self, args[0], "RANK", 1, 1 << 16)
        # internal state: warm-start Q per matrix shape
        self.warm_start: dict[tuple[int, int], np.ndarray] = {}

    def reset(self) -> None:
        self.warm_start.clear()

    def compress(self, x: np.ndarray, shape: tuple) -> Intermediate:
        check_finite(x, self)
        if len(shape) < 2 or x.size == 0:
            return Intermediate(x.size, Floats(x, F32))
        rows, cols = shape[0], x.size // shape[0]
        r = min(self.rank, rows, cols)
        if r * (rows + cols) >= rows * cols:
            return Intermediate(x.size, Floats(x, F32))
        m = x.reshape(rows, cols)
        q = self._warm_q(rows, cols, r)
        p, _ = np.linalg.qr(m @ q)
        p = np.ascontiguousarray(p, dtype=np.float32)
        q = np.ascontiguousarray(m.T @ p, dtype=np.float32)
        self.warm_start[(rows, cols)] = q
        return Intermediate(x.size, Floats(np.concatenate([p.ravel(), q.ravel()]), F32), rank=r)

    def _warm_q(self, rows: int, cols: int, r: int) -> np.ndarray:
        q = self.warm_start.get((rows, cols))
        if q is None or q.shape != (cols, r):
            q = np.zeros((cols, r), dtype=np.float32)
        dead = ~np.any(q, axis=0)
        if dead.any():
            q = q.copy()
            q[:, dead] = self.rng.standard_normal((cols, int(dead.sum()))).astype(np.float32)
        return q
