"""Filter-wise scaling of sparse updates (``--filter-scaling on``: server STC, FedAvg).

Becking et al. (seed 003; ALGORITHMS.md, "Filter-wise scaling for sparse
updates"): every output filter f of a convolutional layer gets a scale factor
s_f, initialised to 1, with effective weight s_f · W_f.  After local training
and sparsification the client loads W + ũ (the global model plus the sparse
update it sends), freezes the weights and BatchNorm, and trains only the scales
for :data:`SCALE_STEPS` SGD steps on its own data
(:meth:`~p2pfl.training.LocalTrainer.train_channel_scales`).  The scales travel
with the sparse update, and the server's filter becomes s_f · (W_f + ũ_f): one
factor moves the whole filter, which a 1 % sparse update cannot.

Both directions carry scales.  FedAvg sends the model down, so it applies each
worker's e_f = s_f·(W_f + ũ_f) − W_f and averages.  Server STC compresses its
downstream too, and a dense e_f would reach the workers only through the
server's 1 % sparse update and residual; so it averages the sparse updates and
the scales apart (:func:`combine_scales`: weighted by data size, or the
per-filter median under a robust ``--aggregator``), sends s̄ with its sparse
update ΔW̃, and server and workers both set W ← s̄ ⊙ (W + ΔW̃)
(:func:`scale_filters`).  The server's residual A_s is left unscaled: it holds
update mass not yet sent, and s̄ stays close to 1.

Each layer sends its step q_l = max_f |s_f − 1| / 7 as float16 and a 4-bit level
per filter (two to a byte): s_f = 1 + q_l · level_f, level in [−7, 7].  The
error-feedback residual keeps what the sparsifier dropped (u − ũ) and not the
scaling: the scales are trained on the loss, not fitted to the dense update, and
folding them into the residual undoes them the next round (measured:
BENCHMARKS.md).  Kernels with three or more dimensions (Conv1d, Conv2d, ...)
are scaled; linear layers and biases are not (ALGORITHMS.md allows a scale per
linear row too; the issue asks for filters, and rows measured no gain: BENCHMARKS.md),
so a model without convolutions is refused at plan time.  Departure from the paper:
the paper's scales are full precision; ours are 4-bit.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SCALE_STEPS", "SCALE_LEVELS", "filter_layout", "scaled_parameters",
           "quantise_scales", "apply_scales", "scale_filters", "combine_scales",
           "scales_frame", "read_scales"]

#: SGD steps that train the scales each round ("a few steps" in the paper).
SCALE_STEPS = 5
#: Largest level of s_f − 1 in units of the layer's step (4 bits: −7 … 7).
SCALE_LEVELS = 7


def _is_kernel(shape) -> bool:
    """Conv kernels (three or more dimensions) get scales; linear layers and biases not."""
    return len(shape) >= 3


def filter_layout(shapes) -> list:
    """``(offset, filters, per_filter)`` of every conv kernel in the flat vector."""
    out, offset = [], 0
    for shape in shapes or ():
        size = math.prod(shape)
        if _is_kernel(shape):
            out.append((offset, int(shape[0]), size // int(shape[0])))
        offset += size
    return out


def _filters(v: torch.Tensor, layout) -> list:
    return [v[o:o + f * k].reshape(f, k) for o, f, k in layout]


def scaled_parameters(shapes) -> list:
    """Indices of the parameters that get scales (those of :func:`filter_layout`)."""
    return [i for i, shape in enumerate(shapes or ()) if _is_kernel(shape)]


def quantise_scales(scales: list) -> list:
    """Per layer ``(q, levels)`` of trained scale vectors: the float16 step
    q = max|s − 1| / 7 and the level of each s_f − 1 in [−7, 7] (int8).  A layer
    whose scales are not all finite keeps scale 1 (q = 0)."""
    out = []
    for s in scales:
        dev = s.double().cpu().numpy() - 1
        top = float(np.abs(dev).max()) if dev.size else 0.0
        q = np.float16(min(top, 1.0) / SCALE_LEVELS) if np.isfinite(top) else np.float16(0)
        levels = np.zeros(dev.size, np.int8) if q == 0 else np.clip(
            np.rint(dev / float(q)), -SCALE_LEVELS, SCALE_LEVELS).astype(np.int8)
        out.append((q, levels))
    return out


def _values(q, levels) -> torch.Tensor:
    """The scales s_f = 1 + q·level_f of one layer, float32."""
    return 1 + torch.from_numpy(levels.astype(np.float32) * np.float32(q))


def apply_scales(base: torch.Tensor, sent: torch.Tensor, scales: list,
                 layout) -> torch.Tensor:
    """The update the server applies: ũ, with e_f = s_f·(W_f + ũ_f) − W_f on filters."""
    out = sent.clone()
    for (o, f, k), w, (q, levels) in zip(layout, _filters(base, layout), scales):
        s = _values(q, levels).reshape(f, 1)
        out[o:o + f * k] = (s * (w + out[o:o + f * k].reshape(f, k)) - w).reshape(-1)
    return out


def scale_filters(model: torch.Tensor, scales: list, layout) -> torch.Tensor:
    """``model`` with every conv filter f multiplied by s_f (a new tensor).  The
    server and its workers both compute W ← s̄ ⊙ (W + ΔW̃) with it, bit for bit."""
    out = model.clone()
    for (o, f, k), (q, levels) in zip(layout, scales):
        out[o:o + f * k] = (_values(q, levels).reshape(f, 1)
                            * out[o:o + f * k].reshape(f, k)).reshape(-1)
    return out


def combine_scales(received: list, weights: list, median: bool, layout) -> list:
    """The global scales s̄ of a round, quantised like a worker's: the data-size
    weighted mean of the workers' scales, or with a robust ``--aggregator`` their
    per-filter median.  No scales (no reply) give s̄ = 1."""
    if not received:
        return quantise_scales([torch.ones(f) for _, f, _ in layout])
    out = []
    for layer in range(len(layout)):
        x = torch.stack([_values(*r[layer]).double() for r in received])
        if median:
            x = x.sort(0).values
            out.append((x[(len(x) - 1) // 2] + x[len(x) // 2]) / 2)
        else:
            w = torch.tensor(weights, dtype=torch.float64).reshape(-1, 1)
            out.append((w * x).sum(0) / w.sum())
    return quantise_scales(out)


def _frame_bytes(layout) -> int:
    return sum(2 + (f + 1) // 2 for _, f, _ in layout)


def scales_frame(scales: list) -> bytes:
    """Per layer: its step as little-endian float16, then the levels as 4-bit two's
    complement, two to a byte (the first in the low nibble)."""
    parts = []
    for q, levels in scales:
        nib = (levels.astype(np.int16) & 0xF).astype(np.uint8)
        if nib.size % 2:
            nib = np.append(nib, np.uint8(0))
        parts.append(np.float16(q).astype("<f2").tobytes()
                     + (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes())
    return b"".join(parts)


def read_scales(frame, layout) -> list:
    """The ``(q, levels)`` of a scales frame; ValueError unless it matches the layout
    (2 + ⌈filters/2⌉ bytes per conv layer), every step is finite and at most 1/7,
    and every level is in [−7, 7]."""
    data = bytes(frame)
    if len(data) != _frame_bytes(layout):
        raise ValueError(f"{len(data)} bytes of filter scales, expected {_frame_bytes(layout)}")
    out, at = [], 0
    for _, f, _ in layout:
        q = np.frombuffer(data, "<f2", 1, at)[0]
        if not (np.isfinite(q) and 0 <= float(q) <= 1.001 / SCALE_LEVELS):
            raise ValueError(f"filter scale step {float(q)!r} out of range")
        packed = np.frombuffer(data, np.uint8, (f + 1) // 2, at + 2)
        nib = np.empty(2 * packed.size, np.int16)
        nib[0::2], nib[1::2] = packed & 0xF, packed >> 4
        levels = np.where(nib >= 8, nib - 16, nib)[:f].astype(np.int8)
        if (levels == -8).any():
            raise ValueError("filter scale level -8 out of range")
        out.append((np.float16(q), levels))
        at += 2 + (f + 1) // 2
    return out
