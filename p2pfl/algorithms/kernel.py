"""The gossip mix, x_i ← w_ii·x_i + Σ_j w_ij·x_j (ALGORITHMS.md, D-PSGD), as one pass.

:func:`weighted_sum` forms the mixing-weighted sum of a node's model and its
neighbours' in one pass over memory, in the optional C extension
``_kernel.c``: each vector is read once and the result written once, where
torch's ``x * w`` followed by one ``add_`` per neighbour makes K + 1 passes.
At a million parameters and more, on a few cores shared by many nodes, those
passes run from main memory and were most of an exchange-only round
(BENCHMARKS.md, "Transport").

Without the extension (no compiler at install), or with ``P2PFL_KERNEL_PURE=1``,
or for tensors it does not take (not float32, not contiguous, not on the CPU, or
of another shape than ``x``), torch computes the same sum in the same order, as
fast as it can: ``add_`` with ``alpha``, which may fuse a product and a sum into
one rounding, so the last bit may differ from the C path (which rounds each
product, then each sum).

:func:`weighted_sum_checked` also says whether the result is all finite.  The C
path tests each block of the result while it is in cache, so a node screens its
neighbours' models for NaN and infinity at no extra pass over memory (a separate
check cost about 9 % of an exchange-only round at a million parameters;
BENCHMARKS.md, "Transport").
"""

from __future__ import annotations

import numpy as np
import torch

from ..native import load_extension

__all__ = ["weighted_sum", "weighted_sum_checked", "HAVE_C"]


_c = load_extension("p2pfl.algorithms._kernel", "P2PFL_KERNEL_PURE")
HAVE_C: bool = _c is not None
_MAX_TERMS = 256  # neighbours per call of the C function (_kernel.c); more go in chunks


def _c_sum(x: torch.Tensor, w_self: float, vectors: list, weights: list):
    """The C path's ``(result, all finite)``, or None where it does not take these tensors.

    The C function checks each buffer itself (native float32, C-contiguous, one
    size); here only what it cannot see: tensors it can read (on the CPU) and
    one shape for all.  Past 256 neighbours it sums in chunks, carrying the
    partial sum with weight 1, which is exact: the bits are those of one
    left-to-right sum."""
    try:
        first = _array(x)
        arrays = [_array(v) for v in vectors]
    except (RuntimeError, TypeError):  # not on the CPU, or a dtype numpy lacks
        return None
    shape = first.shape
    for a in arrays:
        if a.shape != shape:
            return None
    # The result's buffer comes from numpy (plain malloc), not torch.empty (64-byte
    # posix_memalign): the model-sized block a node frees each round then fits the next
    # round's request exactly, where memalign's larger request grew the heap into fresh
    # pages over the first rounds (a third more page faults, 13 % more peak memory, the
    # same throughput: BENCHMARKS.md, "Ninth run").
    flat, w0 = np.empty(shape, first.dtype), float(w_self)
    arrays, weights = tuple(arrays), tuple(map(float, weights))
    try:
        for at in range(0, max(1, len(arrays)), _MAX_TERMS):
            finite = _c.weighted_sum(flat, first, w0, arrays[at:at + _MAX_TERMS],
                                     weights[at:at + _MAX_TERMS])
            first, w0 = flat, 1.0  # out may be the kernel's x (_kernel.c)
    except (TypeError, ValueError, BufferError):  # not float32, or not contiguous
        return None
    return torch.from_numpy(flat), finite  # the last chunk's test covers the whole sum


def _array(t: torch.Tensor) -> np.ndarray:
    """The numpy view of a CPU tensor; ``detach`` only for one that needs grad."""
    try:
        return t.numpy()
    except RuntimeError:
        return t.detach().numpy()


def weighted_sum(x: torch.Tensor, w_self: float, vectors: list, weights: list) -> torch.Tensor:
    """A new tensor ``w_self·x + Σ_k weights[k]·vectors[k]``, summed left to right."""
    return _sum(x, w_self, vectors, weights, check=False)[0]


def weighted_sum_checked(x: torch.Tensor, w_self: float, vectors: list,
                         weights: list) -> tuple[torch.Tensor, bool]:
    """:func:`weighted_sum` and whether every value of the result is finite: False
    when any input holds a NaN or an infinity, or the sum overflows."""
    return _sum(x, w_self, vectors, weights, check=True)


def _sum(x, w_self, vectors, weights, check: bool) -> tuple:
    if len(vectors) != len(weights):
        raise ValueError(f"{len(vectors)} vectors for {len(weights)} weights")
    if _c is not None:
        done = _c_sum(x, w_self, vectors, weights)
        if done is not None:
            return done
    out = x * w_self
    for v, w in zip(vectors, weights):
        out.add_(v, alpha=w)
    return out, bool(torch.isfinite(out).all()) if check else True
