"""PowerSGD low-rank compression (Vogels, Karimireddy, Jaggi, NeurIPS 2019, Alg. 1).

For a matrix M (a tensor reshaped to (shape[0], −1)) and a warm-start Q
(cols×r)::

    P ← M Q;  P ← orthogonalise(P);  Q ← Mᵀ P;  send P, Q;  M̂ = P Qᵀ

M̂ = P Pᵀ M is the projection of M onto span(P), so ‖M̂ − M‖ ≤ ‖M‖ (biased;
pair it with error feedback, as the paper does).

``powersgd:R:alternate`` sends one factor a message, as PowerGossip does
(Vogels, Karimireddy, Jaggi, NeurIPS 2020, "Practical low-rank communication
compression in decentralized deep learning": each step is half a power
iteration, alternating between the left and the right factor).  Sender and
receivers hold the same orthonormal factor F, derived from the last message
of the stream, and the next message is M projected on it::

    F right (cols×r):  send A = M F  (rows·r values);  M̂ = A Fᵀ;  next F ← orth(A)
    F left  (rows×r):  send B = Mᵀ F (cols·r values);  M̂ = F Bᵀ;  next F ← orth(B)

M̂ is again a projection of M (onto a known subspace), so ‖M̂ − M‖ ≤ ‖M‖.  The
first message of a chain is a plain (P, Q) one, after which F ← orth(Q).  Both
ends orthonormalise the factor *as decoded* (after any quantiser), with the
same orthonormalisation, exact on every machine (``_orth``), so they hold the
same F.  The chain is the temporal one of
``cabac:temporal`` (:mod:`~p2pfl.compression.temporal`): every low-rank message
carries ``varint 2·id + one_sided``; a receiver that lacks message id − 1 raises
:class:`TemporalGap`, asks for a resynchronisation, and the sender's
``restart()`` makes its next message a plain one.

State (explicit, owned by the stage object): ``warm_start`` maps the matrix
shape (rows, cols) to the last Q; with ``alternate``, the chain we send on
and the one held per sender.  Use one codec object per tensor stream; two
streams with the same shape would share (and disturb) one warm start.
``reset()`` forgets it all.  The first Q, and any all-zero column of a stored
Q, is drawn i.i.d. normal from the codec's seeded generator.

1-D tensors, and matrices where r(rows+cols) ≥ rows·cols, are sent dense.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import ConfigError
from .base import Stage, check_finite, int_arg
from .errors import CodecError
from .intermediate import F32, Floats, Intermediate
from .temporal import TemporalGap

__all__ = ["PowerSGD"]

_MAX_STREAMS = 4096  # chains a receiver keeps (one per sender and tensor)


def _orth(a: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning ``a`` (n×r, r ≤ n), the same bits on every machine.

    Both ends of a chain compute this from the same decoded values, so it must not
    depend on the BLAS or LAPACK build or on the CPU: modified Gram–Schmidt in
    float64 with exactly rounded dot products (``math.fsum``) and elementwise
    IEEE operations only.  A column that vanishes is replaced by the first unit
    vector after the last one used that is not in the span of the columns before it
    (not the first from 0 again: an all-zero ``a`` costs O(r²·n), not O(r³·n))."""
    n, r = a.shape
    q = a.astype(np.float64)
    tried = -1  # the last unit vector a vanished column was replaced by
    for j in range(r):
        col = q[:, j].copy()
        for unit in itertools.chain((-1,), range(tried + 1, n), range(tried + 1)):
            if unit >= 0:
                col = np.zeros(n)
                col[unit] = 1.0
                tried = unit
            for i in range(j):
                col -= math.fsum(q[:, i] * col) * q[:, i]
            norm = math.sqrt(math.fsum(col * col))
            if norm > 1e-6 * (1.0 if unit >= 0 else _scale(a)):
                break
        q[:, j] = col / norm
    return q.astype(np.float32)


def _scale(a: np.ndarray) -> float:
    return max(math.sqrt(math.fsum((a.astype(np.float64) ** 2).ravel())), 1e-300)


class PowerSGD(Stage):
    """``powersgd:RANK[:alternate]``: one power-iteration step with warm start, or
    half a step a message (module docstring)."""
    name, wire_id, role, biased = "powersgd", 24, "transform", True
    min_args, max_args = 1, 2

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.rank = int_arg(self, args[0], "RANK", 1, 1 << 16)
        if len(args) > 1 and args[1] != "alternate":
            raise ConfigError(f"powersgd takes 'alternate' as its second argument, got "
                              f"{args[1]!r}")
        self.alternate = len(args) > 1
        # internal state: warm-start Q per matrix shape; the alternate chains
        self.warm_start: dict[tuple[int, int], np.ndarray] = {}
        self.sent_id = 0
        self.ahead: tuple | None = None  # (side, F) our next message projects on
        self.received: dict = {}  # sender -> (id, side, F) of its next message

    def reset(self) -> None:
        self.warm_start.clear()
        self.sent_id, self.ahead = 0, None
        self.received.clear()

    def restart(self) -> None:
        """The next message is a plain (P, Q) one (a receiver lost the chain)."""
        self.ahead = None

    def compress(self, x: np.ndarray, shape: tuple) -> Intermediate:
        check_finite(x, self)
        if len(shape) < 2 or x.size == 0:
            return Intermediate(x.size, Floats(x, F32))
        rows, cols = shape[0], x.size // shape[0]
        r = min(self.rank, rows, cols)
        if r * (rows + cols) >= rows * cols:
            return Intermediate(x.size, Floats(x, F32))
        m = x.reshape(rows, cols)
        own = self.sent_id + 1
        ahead = self.ahead
        if ahead is not None and ahead[1].shape == ((cols if ahead[0] == 1 else rows), r):
            side, f = ahead
            vals = m @ f if side == 1 else m.T @ f
            return Intermediate(x.size, Floats(np.ascontiguousarray(vals, np.float32).ravel(),
                                               F32), rank=r, side=side, known=f,
                                chain=2 * own + 1)
        q = self._warm_q(rows, cols, r)
        p, _ = np.linalg.qr(m @ q)
        p = np.ascontiguousarray(p, dtype=np.float32)
        q = np.ascontiguousarray(m.T @ p, dtype=np.float32)
        self.warm_start[(rows, cols)] = q
        return Intermediate(x.size, Floats(np.concatenate([p.ravel(), q.ravel()]), F32), rank=r,
                            chain=2 * own if self.alternate else 0)

    def sent(self, inter: Intermediate, shape: tuple) -> None:
        """After the quantiser: the chain moves on with the factor as the receivers
        will decode it."""
        if inter.chain:
            self.sent_id = inter.chain >> 1
            self.ahead = _next_factor(inter, shape)

    def chained(self, head: int, sender, shape: tuple, rank: int) -> tuple:
        """(side, known factor) for a message with chain field ``head`` from
        ``sender``; TemporalGap when its predecessor is not the one held."""
        own, one_sided = head >> 1, head & 1
        if own == 0 or (one_sided and own == 1):
            raise CodecError(f"powersgd chain id {own} is invalid")
        if not one_sided:
            return 0, None
        held = self.received.get(sender) if sender is not None else None
        if held is None or held[0] != own - 1:
            raise TemporalGap(f"powersgd message {own} projects on message {own - 1} of its "
                              "sender, which this receiver does not hold")
        _, side, f = held
        rows, cols = shape[0], int(np.prod(shape[1:]))
        if f.shape != ((cols if side == 1 else rows), rank):
            raise CodecError("powersgd one-sided message of another rank or shape than its "
                             "chain")
        return side, f

    def received_from(self, sender, inter: Intermediate, shape: tuple) -> None:
        """A chained message decoded: hold the factor its successor projects on."""
        if not inter.chain or sender is None:
            return
        if sender not in self.received and len(self.received) >= _MAX_STREAMS:
            raise CodecError("too many powersgd chains")
        self.received[sender] = (inter.chain >> 1, *_next_factor(inter, shape))

    def _warm_q(self, rows: int, cols: int, r: int) -> np.ndarray:
        q = self.warm_start.get((rows, cols))
        if q is None or q.shape != (cols, r):
            q = np.zeros((cols, r), dtype=np.float32)
        dead = ~np.any(q, axis=0)
        if dead.any():
            q = q.copy()
            q[:, dead] = self.rng.standard_normal((cols, int(dead.sum()))).astype(np.float32)
        return q


def _next_factor(inter: Intermediate, shape: tuple) -> tuple:
    """(side, F) the message after ``inter`` projects on: orth(Q) after a plain
    message, orth(A) after M·F, orth(B) after Mᵀ·F."""
    rows, r = shape[0], inter.rank
    cols = inter.numel // rows
    vals = inter.values.as_float32()
    if inter.side == 0:
        return 1, _orth(vals[rows * r:].reshape(cols, r))
    if inter.side == 1:
        return 2, _orth(vals.reshape(rows, r))
    return 1, _orth(vals.reshape(cols, r))
