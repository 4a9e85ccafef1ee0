"""Filter-wise scaling of sparse updates (``--filter-scaling on``, server STC).

After Becking et al. (seed 003, "adaptive differential filters"): every output
filter f of a convolutional layer gets a scale factor s_f that travels with the
sparse update, and the server's filter becomes s_f · (W_f + ΔW̃_f).  One factor
per filter costs a byte; it moves the whole filter, which a 1 % sparse update
cannot, so it compensates for what the sparsifier drops.

Departure from the paper, said here and in BENCHMARKS.md: the paper trains the
factors by SGD with the weights; we fit each one in closed form after local
training, as the least-squares scale that brings the sparse update closest to
the dense one (W is the global model, u the dense update, ũ the sparse one):

    a = W_f + ũ_f,   b = W_f + u_f,   s_f = <a, b> / <a, a>

so the filter the server builds is the projection of the client's filter onto
the direction of the sparse one.  s_f − 1 is sent as an int8 level of step
2⁻⁷ (s ∈ [0.008, 1.99]); the update the server applies is
e_f = s_f·a − W_f, and the client's residual keeps u − e (error feedback).
Kernels with three or more dimensions (Conv1d, Conv2d, ...) are scaled; linear
layers and biases are not.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["filter_layout", "fit_scales", "apply_scales", "scales_frame", "read_scales",
           "STEP"]

STEP = 2.0 ** -7


def filter_layout(shapes) -> list:
    """``(offset, filters, per_filter)`` of every conv kernel in the flat vector."""
    out, offset = [], 0
    for shape in shapes or ():
        size = math.prod(shape)
        if len(shape) >= 3:
            out.append((offset, int(shape[0]), size // int(shape[0])))
        offset += size
    return out


def _filters(v: torch.Tensor, layout) -> list:
    return [v[o:o + f * k].reshape(f, k) for o, f, k in layout]


def fit_scales(base: torch.Tensor, sent: torch.Tensor, target: torch.Tensor,
               layout) -> np.ndarray:
    """int8 levels of s_f − 1 (module docstring), one per filter, in layout order."""
    levels = []
    for w, s, u in zip(_filters(base, layout), _filters(sent, layout),
                       _filters(target, layout)):
        a, b = (w + s).double(), (w + u).double()
        aa = (a * a).sum(1)
        scale = torch.where(aa > 0, (a * b).sum(1) / aa.clamp_min(1e-300), torch.ones_like(aa))
        levels.append(torch.clamp(torch.round((scale - 1) / STEP), -127, 127))
    if not levels:
        return np.zeros(0, np.int8)
    return torch.cat(levels).numpy().astype(np.int8)


def apply_scales(base: torch.Tensor, sent: torch.Tensor, levels: np.ndarray,
                 layout) -> torch.Tensor:
    """The update the server applies: ũ, with e_f = s_f·(W_f + ũ_f) − W_f on filters."""
    out = sent.clone()
    at = 0
    for (o, f, k), w in zip(layout, _filters(base, layout)):
        s = 1 + torch.from_numpy(levels[at:at + f].astype(np.float32)).reshape(f, 1) * STEP
        at += f
        out[o:o + f * k] = (s * (w + out[o:o + f * k].reshape(f, k)) - w).reshape(-1)
    return out


def scales_frame(levels: np.ndarray) -> bytes:
    return np.ascontiguousarray(levels, np.int8).tobytes()


def read_scales(frame, layout) -> np.ndarray:
    """The levels of a scales frame; ValueError unless it holds one per filter."""
    expected = sum(f for _, f, _ in layout)
    data = bytes(frame)
    if len(data) != expected:
        raise ValueError(f"{len(data)} filter scales, expected {expected}")
    return np.frombuffer(data, np.int8).copy()
