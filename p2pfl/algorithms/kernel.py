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
"""

from __future__ import annotations

import os

import torch

__all__ = ["weighted_sum", "HAVE_C"]


def _load():
    if os.environ.get("P2PFL_KERNEL_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _kernel  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _kernel


_c = _load()
HAVE_C: bool = _c is not None
_MAX_TERMS = 256  # neighbours per call of the C function (_kernel.c); more go in chunks


def _takes(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def weighted_sum(x: torch.Tensor, w_self: float, vectors: list, weights: list) -> torch.Tensor:
    """A new tensor ``w_self·x + Σ_k weights[k]·vectors[k]``, summed left to right.

    Past 256 neighbours the C path sums in chunks, carrying the partial sum with
    weight 1, which is exact: the bits are those of one left-to-right sum."""
    if len(vectors) != len(weights):
        raise ValueError(f"{len(vectors)} vectors for {len(weights)} weights")
    if _c is not None and _takes(x) and all(_takes(v) and v.shape == x.shape for v in vectors):
        out = torch.empty_like(x)
        flat, first, w0 = out.view(-1).numpy(), x.detach().view(-1).numpy(), float(w_self)
        for at in range(0, max(1, len(vectors)), _MAX_TERMS):
            _c.weighted_sum(flat, first, w0,
                            tuple(v.detach().view(-1).numpy() for v in vectors[at:at + _MAX_TERMS]),
                            tuple(float(w) for w in weights[at:at + _MAX_TERMS]))
            first, w0 = flat, 1.0  # out may be the kernel's x (_kernel.c)
        return out
    out = x * w_self
    for v, w in zip(vectors, weights):
        out.add_(v, alpha=w)
    return out
