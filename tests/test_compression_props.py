"""Property tests (hypothesis) for the codecs: round trips, the error-feedback
invariant, contractivity of the biased codecs, unbiasedness of the stochastic ones."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from p2pfl.compression import ErrorFeedback, make_codec

torch.set_num_threads(1)

SPECS = ["none", "fp16", "bf16", "quant:0.0039", "quant:0.0039+cabac", "stc:0.1+golomb",
         "topk:0.1+quant:0.001+cabac", "sbc:0.1+golomb", "topk:0.1+golomb+deflate",
         "uniform:8+lzma", "qsgd:16", "terngrad", "sign", "randk:0.1", "threshold:0.001",
         "powersgd:2", "randk:0.2:scaled", "stc:0.1+cabac", "none+bz2"]
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)

floats = st.floats(-100, 100, allow_nan=False, width=32)
shapes = st.sampled_from([(1,), (7,), (64,), (5, 9), (3, 4, 5), (), (12, 2)])


@st.composite
def tensors(draw):
    shape = draw(shapes)
    arr = draw(arrays(np.float32, shape, elements=floats))
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(shape)


def codec(spec, **kw):
    if "cabac" in spec:
        pytest.importorskip("p2pfl.compression.cabac")
    return make_codec(spec, seed=0, **kw)


@pytest.mark.parametrize("spec", SPECS)
@SETTINGS
@given(x=tensors())
def test_round_trip(spec, x):
    c = codec(spec, error_feedback=False)
    frames, recon = c.encode_with_reconstruction(x)
    y = c.decode(frames)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.equal(y, recon) and torch.isfinite(y).all()
    if spec in ("none", "none+bz2"):
        assert torch.equal(y, x)
    if spec.startswith("quant:"):
        assert (y - x).abs().max() <= 0.0039 / 2 + 1e-5 * x.abs().max() + 1e-7


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(xs=st.lists(tensors(), min_size=1, max_size=4), shape=shapes)
def test_error_feedback_invariant(spec, xs, shape):
    """old residual + input == sent + new residual (ALGORITHMS.md § Error feedback)."""
    ef = ErrorFeedback(codec(spec, error_feedback=False))
    for x in xs:
        if ef.residual is not None and ef.residual.shape != x.shape:
            ef.reset()
        old = ef.residual.clone() if ef.residual is not None else torch.zeros_like(x)
        frames, sent = ef.encode_with_reconstruction(x)
        assert torch.equal(ef.decode(frames), sent)
        lhs, rhs = old + x, sent + ef.residual
        tol = 1e-6 * max(1.0, float(lhs.abs().max()) if lhs.numel() else 1.0)
        assert (lhs - rhs).abs().max() <= tol if lhs.numel() else True


def _sq(t):
    return float((t.double() ** 2).sum())


@pytest.mark.parametrize("spec,delta", [
    ("topk:0.1", lambda x, k: k / x.numel()),
    ("stc:0.1", lambda x, k: 0.0),           # = k·μ²/‖x‖² > 0, checked strictly below
    ("sbc:0.1", lambda x, k: 0.0),
    ("sign", lambda x, k: float(x.abs().double().sum()) ** 2 / (x.numel() * _sq(x))),
    ("powersgd:1", lambda x, k: 0.0),
])
@SETTINGS
@given(x=tensors())
def test_biased_codecs_are_contractive(spec, delta, x):
    """‖C(x) − x‖² ≤ (1 − δ)‖x‖² (CHOCO compressor condition), δ > 0 for x ≠ 0."""
    if not x.any():
        return
    c = codec(spec, error_feedback=False)
    err = _sq(c.decode(c.encode(x)) - x)
    k = max(1, int(np.ceil(0.1 * x.numel() * (1 - 1e-12))))
    bound = (1 - delta(x, k)) * _sq(x)
    assert err <= bound * (1 + 1e-5) + 1e-9
    if spec != "powersgd:1":  # stc/sbc/topk/sign strictly reduce the error
        assert err < _sq(x) * (1 - 1e-7) or _sq(x) < 1e-30


@pytest.mark.parametrize("spec", ["qsgd:4", "terngrad", "randk:0.25:scaled"])
@settings(max_examples=10, deadline=None, derandomize=True)
@given(x=arrays(np.float32, 8, elements=st.floats(-10, 10, width=32)))
def test_stochastic_codecs_are_unbiased(spec, x):
    """E[C(x)] = x: the mean of many draws is within 5 standard errors of x.

    Each entry takes one of two values a gap apart (QSGD: ‖x‖/s, TernGrad: max|x|,
    scaled random-k: |x_i|·d/k), so its standard deviation is at most gap/2.  The
    standard error uses that bound: a sample estimate is far too small when one of
    the two values is rare, which made this test fail on unlucky draws.
    """
    x = torch.from_numpy(x.copy())
    c = codec(spec, error_feedback=False)
    n = 400
    draws = torch.stack([c.decode(c.encode(x)) for _ in range(n)]).double()
    xd = x.double()
    gap = {"qsgd:4": xd.norm() / 4 * torch.ones_like(xd), "terngrad": xd.abs().max()
           * torch.ones_like(xd), "randk:0.25:scaled": xd.abs() * 4}[spec]
    se = torch.maximum(draws.std(0), gap / 2) / n ** 0.5
    assert torch.all((draws.mean(0) - xd).abs() <= 5 * se + 1e-5 * (1 + xd.abs()))
