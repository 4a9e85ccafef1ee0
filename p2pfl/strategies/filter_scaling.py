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
the direction of the sparse one.  s_f − 1 is small (a round moves a filter by a
few per cent at most), so each layer sends one float32 step q_l = max_f |s_f − 1|/127
and an int8 level per filter: s_f = 1 + q_l·level_f, a byte per filter and four
per layer.  The update the server applies is e_f = s_f·a − W_f, and the client's
residual keeps u − e (error feedback).
Kernels with three or more dimensions (Conv1d, Conv2d, ...) are scaled; linear
layers and biases are not.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["filter_layout", "fit_scales", "apply_scales", "scales_frame", "read_scales"]


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
               layout) -> list:
    """Per conv layer ``(q, levels)``: its step and the int8 level of each filter's
    s_f − 1 (module docstring)."""
    out = []
    for w, s, u in zip(_filters(base, layout), _filters(sent, layout),
                       _filters(target, layout)):
        a, b = (w + s).double(), (w + u).double()
        aa = (a * a).sum(1)
        scale = torch.where(aa > 0, (a * b).sum(1) / aa.clamp_min(1e-300), torch.ones_like(aa))
        dev = (scale - 1).numpy()
        q = np.float32(min(float(np.abs(dev).max()), 1.0) / 127) if dev.size else np.float32(0)
        levels = np.zeros(dev.size, np.int8) if q == 0 else \
            np.clip(np.rint(dev / q), -127, 127).astype(np.int8)
        out.append((q, levels))
    return out


def apply_scales(base: torch.Tensor, sent: torch.Tensor, scales: list,
                 layout) -> torch.Tensor:
    """The update the server applies: ũ, with e_f = s_f·(W_f + ũ_f) − W_f on filters."""
    out = sent.clone()
    for (o, f, k), w, (q, levels) in zip(layout, _filters(base, layout), scales):
        s = 1 + torch.from_numpy(levels.astype(np.float32) * np.float32(q)).reshape(f, 1)
        out[o:o + f * k] = (s * (w + out[o:o + f * k].reshape(f, k)) - w).reshape(-1)
    return out


def scales_frame(scales: list) -> bytes:
    """Per layer: its step as little-endian float32, then one int8 level per filter."""
    return b"".join(np.float32(q).astype("<f4").tobytes() + levels.astype(np.int8).tobytes()
                    for q, levels in scales)


def read_scales(frame, layout) -> list:
    """The ``(q, levels)`` of a scales frame; ValueError unless it matches the layout
    (4 + filters bytes per conv layer) and every step is finite and at most 1/127."""
    data = bytes(frame)
    if len(data) != sum(4 + f for _, f, _ in layout):
        raise ValueError(f"{len(data)} bytes of filter scales, expected "
                         f"{sum(4 + f for _, f, _ in layout)}")
    out, at = [], 0
    for _, f, _ in layout:
        q = float(np.frombuffer(data, "<f4", 1, at)[0])
        if not (np.isfinite(q) and 0 <= q <= 1.000001 / 127):
            raise ValueError(f"filter scale step {q!r} out of range")
        out.append((np.float32(q), np.frombuffer(data, np.int8, f, at + 4).copy()))
        at += 4 + f
    return out
