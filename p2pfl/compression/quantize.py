"""Quantisers: map float values (dense, or the k values of a sparsifier) to
floats of fewer bits or to integer levels with one scale.

Each docstring cites the rule it implements (ALGORITHMS.md and the papers it
names).  All quantisers work on a 1-D float32 numpy array.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import Stage, check_finite, float_arg, int_arg
from .dq import trellis_levels
from .errors import CodecError
from .intermediate import BF16, F16, F32, DQLevels, Floats, Levels, unit_scale

__all__ = ["NoQuant", "FP16", "BF16Quant", "StepQuant", "DependentQuant", "UniformQuant",
           "QSGD", "TernGrad", "SignQuant"]

_FP16_MAX = float(np.finfo(np.float16).max)
_CHUNK = 1 << 16  # values per float64 block of _step_levels (512 KiB: stays in cache)


class NoQuant(Stage):
    """``none``: float32 values as they are (lossless)."""
    name, wire_id, role = "none", 1, "quantise"
    max_args = 0

    def quantise(self, x: np.ndarray) -> Floats:
        return Floats(x, F32)


class FP16(Stage):
    """``fp16``: IEEE half precision, round to nearest, saturating at ±65504.  A NaN
    or an infinity is a :class:`CodecError`, as in the other lossy stages: saturated,
    an infinity would reach the receivers as a finite 65504 that their screening of
    non-finite models lets through."""
    name, wire_id, role, biased = "fp16", 2, "quantise", True
    max_args = 0

    def quantise(self, x: np.ndarray) -> Floats:
        check_finite(x, self)
        return Floats(np.clip(x, -_FP16_MAX, _FP16_MAX).astype(np.float16), F16)


class BF16Quant(Stage):
    """``bf16``: bfloat16 (8-bit exponent), round to nearest even."""
    name, wire_id, role, biased = "bf16", 3, "quantise", True
    max_args = 0

    def quantise(self, x: np.ndarray) -> Floats:
        bits = torch.from_numpy(np.ascontiguousarray(x)).to(torch.bfloat16).view(torch.int16)
        return Floats(bits.numpy().view(np.uint16), BF16)


class _StepStage(Stage):
    """A quantiser of ``NAME:STEP[:rd=LAMBDA]``: the step Δ and the rate weight λ."""
    min_args = 1
    max_args = 2

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.step = float_arg(self, args[0], "STEP", 0.0, 1e30)
        self.lam = _lambda_arg(self, args[1]) if len(args) == 2 else 0.0


class StepQuant(_StepStage):
    """``quant:STEP``: uniform scalar quantisation with step Δ, nearest level
    (DeepCABAC's "Quantise" step, ALGORITHMS.md § DeepCABAC): level = round(x/Δ),
    x̂ = level·Δ, so |x̂ − x| ≤ Δ/2 (computed in float64, then cast to float32).

    ``quant:STEP:rd=λ`` chooses each level by rate–distortion instead (DeepCABAC's
    RDOQ, :mod:`~p2pfl.compression.rdoq`): the nearest level, the next one towards
    zero, or zero.  A level never grows in magnitude or changes sign, so
    |x̂ − x| ≤ max(3Δ/2, |x|)."""
    name, wire_id, role, biased, levels = "quant", 4, "quantise", True, True

    def quantise(self, x: np.ndarray) -> Levels:
        if self.lam == 0:
            from .cabac import step_levels  # lazy, as the cabac stage imports it

            lv = step_levels(x, self.step)  # one C pass, when all is well
            if lv is not None:
                return Levels(lv, self.step)
        check_finite(x, self)
        # the largest |level| (x/step and rint are monotonic; RDOQ's are no larger); int32
        # levels below 2**30, so that a difference of two levels (write_values' offset) fits
        top = float(np.rint(max(float(x.max()), -float(x.min())) / self.step)) if x.size else 0.0
        if top > 2**31 - 1:
            raise CodecError(f"quant:{self.args[0]} levels overflow int32; use a larger step")
        if self.lam > 0:
            from .rdoq import rdoq_levels

            return Levels(rdoq_levels(x, self.step, self.lam), self.step)
        return Levels(_step_levels(x, self.step, np.int32 if top < 2**30 else np.int64), self.step)


def _lambda_arg(stage: Stage, text: str) -> float:
    key, _, value = text.partition("=")
    if key != "rd" or not value:
        raise ConfigError(f"{stage.name} takes rd=LAMBDA as its optional second argument, "
                          f"got {text!r}")
    return float_arg(stage, value, "LAMBDA", 0.0, 1e6, lo_open=False)


class DependentQuant(_StepStage):
    """``dq:STEP``: dependent (trellis-coded) quantisation with step Δ, NNC's two
    interleaved quantisers and 4-state machine (ALGORITHMS.md, "Entropy coding
    extensions"; :mod:`~p2pfl.compression.dq`).  The levels minimise Σ (x/Δ − r)²
    over the Viterbi paths; ``dq:STEP:rd=λ`` adds λ times their estimated bits.
    Each quantiser's two candidates bracket x within 2Δ and zero is the third, so
    |x̂ − x| ≤ max(2Δ, |x|).  For dense tensors and PowerSGD factors only."""
    name, wire_id, role, biased, levels = "dq", 9, "quantise", True, True
    dependent = True

    def quantise(self, x: np.ndarray) -> DQLevels:
        return DQLevels(trellis_levels(x, self.step, self.lam)[0], self.step)  # refuses NaN, inf

    def received(self, values):
        if not isinstance(values, Levels):
            raise CodecError("dq expects integer levels")
        return DQLevels(values.levels, values.scale)


def _step_levels(x: np.ndarray, step: float, dtype) -> np.ndarray:
    """rint(x / step), divided in float64, as integers of ``dtype`` (the caller
    checked that they fit); block by block, without a full-size float64 temporary."""
    out = np.empty(x.size, dtype=dtype)
    buf = np.empty(min(x.size, _CHUNK), dtype=np.float64)
    for a in range(0, x.size, _CHUNK):
        b = buf[:min(_CHUNK, x.size - a)]
        np.divide(x[a:a + _CHUNK], step, out=b, dtype=np.float64)
        np.rint(b, out=b)
        out[a:a + b.size] = b
    return out


class UniformQuant(Stage):
    """``uniform:BITS``: symmetric uniform quantiser with a per-tensor scale,
    levels in [−L, L] with L = 2^(BITS−1) − 1 and scale = max|x| / L
    (survey 002, "uniform quantisation"); deterministic nearest rounding."""
    name, wire_id, role, biased, levels = "uniform", 5, "quantise", True, True
    min_args = 1

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.bits = int_arg(self, args[0], "BITS", 2, 16)

    def quantise(self, x: np.ndarray) -> Levels:
        check_finite(x, self)
        top = (1 << (self.bits - 1)) - 1
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak == 0.0:
            return Levels(np.zeros(x.size, dtype=np.int64), 0.0)
        scale = peak / top
        lv = np.clip(np.rint(x.astype(np.float64) / scale), -top, top)
        return Levels(lv.astype(np.int64), scale)


class QSGD(Stage):
    """``qsgd:LEVELS``: QSGD (Alistarh et al. 2017), s = LEVELS:
    C(x)_i = ‖x‖₂ · sign(x_i) · ξ_i/s with ξ_i = ⌊s|x_i|/‖x‖⌋ + Bernoulli(frac);
    unbiased, E[C(x)] = x.  CHOCO's QSGD-16 (ALGORITHMS.md § CHOCO-SGD)."""
    name, wire_id, role, levels, stochastic = "qsgd", 6, "quantise", True, True
    min_args = 1

    def __init__(self, args, rng):
        super().__init__(args, rng)
        self.s = int_arg(self, args[0], "LEVELS", 1, 1 << 20)

    def quantise(self, x: np.ndarray) -> Levels:
        check_finite(x, self)
        norm = float(np.linalg.norm(x.astype(np.float64)))
        if norm == 0.0:
            return Levels(np.zeros(x.size, dtype=np.int64), 0.0)
        r = np.abs(x.astype(np.float64)) * (self.s / norm)
        low = np.floor(r)
        lv = low + (self.rng.random(x.size) < (r - low))
        return Levels((np.sign(x) * lv).astype(np.int64), norm / self.s)


class TernGrad(Stage):
    """``terngrad``: TernGrad (Wen et al. 2017): s = max|x|,
    C(x)_i = s · sign(x_i) · Bernoulli(|x_i|/s); unbiased."""
    name, wire_id, role, levels, stochastic = "terngrad", 7, "quantise", True, True
    max_args = 0

    def quantise(self, x: np.ndarray) -> Levels:
        check_finite(x, self)
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak == 0.0:
            return Levels(np.zeros(x.size, dtype=np.int64), 0.0)
        keep = self.rng.random(x.size) < np.abs(x) / peak
        return Levels((np.sign(x) * keep).astype(np.int64), peak)


class SignQuant(Stage):
    """``sign``: scaled sign, C(x) = ‖x‖₁/d · sign(x) with sign(0) = +1
    (CHOCO's "sign+norm", ALGORITHMS.md § CHOCO-SGD; Karimireddy et al. 2019).
    ‖C(x) − x‖² = ‖x‖² − ‖x‖₁²/d: contractive with δ = ‖x‖₁²/(d‖x‖²) ≥ 1/d.
    One bit per value."""
    name, wire_id, role, biased, levels = "sign", 8, "quantise", True, True
    max_args = 0

    def quantise(self, x: np.ndarray) -> Levels:
        check_finite(x, self)
        scale = unit_scale(np.abs(x.astype(np.float64)).mean()) if x.size else 0.0
        return Levels(np.where(x < 0, -1, 1).astype(np.int64), scale)
