"""``quant:STEP:rd=LAMBDA``: rate–distortion optimised levels (compression/rdoq.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2pfl.compression import make_codec, wire_size
from p2pfl.compression.rdoq import rdoq_levels
from p2pfl.compression.errors import CodecError
from p2pfl.errors import ConfigError

STEP = 2.0 ** -6


def _weights(n=200_000, seed=0):
    return np.random.default_rng(seed).laplace(0, 0.02, n).astype(np.float32)


def test_lambda_zero_is_nearest_rounding():
    x = _weights()
    assert np.array_equal(rdoq_levels(x, STEP, 0.0), np.rint(x / STEP).astype(np.int64))
    t = torch.from_numpy(x)
    assert [bytes(f) for f in make_codec(f"quant:{STEP}:rd=0+cabac").encode(t)][1:] == \
        [bytes(f) for f in make_codec(f"quant:{STEP}+cabac").encode(t)][1:]


@pytest.mark.parametrize("lam", [0.05, 0.3, 3.0, 100.0])
def test_distortion_bound_and_levels_never_grow_or_flip(lam):
    x = _weights(seed=1)
    nearest = np.rint(x.astype(np.float64) / STEP)
    q = rdoq_levels(x, STEP, lam)
    assert np.all(np.abs(q) <= np.abs(nearest))
    assert np.all((q == 0) | (np.sign(q) == np.sign(x)))
    err = np.abs(q * STEP - x.astype(np.float64))
    assert np.all(err <= np.maximum(1.5 * STEP, np.abs(x)) + 1e-12)
    assert np.all((q == nearest) | (np.abs(q) == np.abs(nearest) - 1) | (q == 0))


def test_rd_trades_distortion_for_bits_and_decodes_with_the_usual_decoder():
    t = torch.from_numpy(_weights(seed=2))
    plain = make_codec(f"quant:{STEP}+cabac")
    rd = make_codec(f"quant:{STEP}:rd=0.3+cabac")
    fp, xp = plain.encode_with_reconstruction(t)
    fr, xr = rd.encode_with_reconstruction(t)
    assert wire_size(fr) < 0.97 * wire_size(fp)
    assert float(((xr - t) ** 2).mean()) > float(((xp - t) ** 2).mean())
    assert torch.equal(make_codec(f"quant:{STEP}:rd=0.3+cabac").decode(fr), xr)


@pytest.mark.parametrize("spec", ["quant:0.1:foo", "quant:0.1:rd=-1", "quant:0.1:rd=",
                                  "quant:0.1:rd=x", "quant:0.1:rd=1:rd=2"])
def test_bad_rd_specs_are_usage_errors(spec):
    with pytest.raises(ConfigError):
        make_codec(spec + "+cabac")


@pytest.mark.parametrize("spec", ["quant:0.1:rd=0.1", "quant:0.1:rd=0.1+lzma",
                                  "topk:0.1+quant:0.1:rd=0.1+golomb", "dq:0.1:rd=0.1+bz2"])
def test_rd_without_cabac_is_refused(spec):
    """Its rates are CABAC's estimates: without cabac it only zeroed levels (more error,
    bytes no coder saved); rd=0 and plain dq still build."""
    with pytest.raises(ConfigError, match="without \\+cabac it only adds error"):
        make_codec(spec)
    make_codec(spec.replace("rd=0.1", "rd=0"))


def test_a_small_step_costs_memory_by_the_weights_not_by_the_largest_level():
    """The rate of each magnitude was tabled up to the largest level: 20,000 weights at a
    step giving levels near 1.5e7 peaked at 840 MiB (tables of 15 M entries a sign and
    a pass; benchmarks/rdoq_range.py), and quant:1e-12 asked for terabytes."""
    import tracemalloc

    x = np.random.default_rng(2).normal(0, 0.3, 20_000).astype(np.float32)
    tracemalloc.start()
    try:
        q = rdoq_levels(x, 1e-7, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak
    nearest = np.rint(x.astype(np.float64) / 1e-7)
    assert np.abs(nearest).max() > 1e7 and np.all(np.abs(q) <= np.abs(nearest))
    with pytest.raises(CodecError, match="overflow int32; use a larger step"):
        make_codec("quant:1e-12:rd=0.1+cabac").encode(torch.from_numpy(x))
