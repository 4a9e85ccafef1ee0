"""``dq:STEP[:rd=LAMBDA]``: dependent (trellis-coded) quantisation (compression/dq.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2pfl.compression import cabac, dq, make_codec, wire_size
from p2pfl.compression.errors import CodecError
from p2pfl.errors import ConfigError

STEP = 2.0 ** -8
needs_c = pytest.mark.skipif(not dq.HAVE_C, reason="C extension _dq not built")


def _weights(n=100_000, seed=0, scale=0.02):
    return np.random.default_rng(seed).laplace(0, scale, n).astype(np.float32)


def _states_of(levels):
    """The quantiser (0: Q0, 1: Q1) of each level, walking the state machine."""
    s, out = 0, []
    for k in levels.tolist():
        out.append(s >> 1)
        s = dq.NEXT[s][k & 1]
    return np.array(out)


def test_reconstruction_follows_the_two_quantisers_and_the_state_machine():
    levels = np.array([1, 1, -2, 0, 3, -1, 0, 0, 2, -3], np.int32)
    q = _states_of(levels)
    assert q.tolist() == [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]  # states 0 2 3 3 3 1 0 0 0 0
    r = np.where(q == 0, 2 * levels, 2 * levels - np.sign(levels))
    np.testing.assert_array_equal(dq.dequant(levels, 0.5), (r * 0.5).astype(np.float32))


@pytest.mark.parametrize("lam", [0.0, 0.1, 2.0])
def test_levels_decode_within_the_bound_and_their_classes_are_the_states(lam):
    x = _weights(seed=1)
    levels, cls = dq.trellis_levels(x, STEP, lam)
    np.testing.assert_array_equal(cls, _states_of(levels))
    err = np.abs(dq.dequant(levels, STEP).astype(np.float64) - x)
    # each quantiser's two candidates bracket x within 2 steps; zero is the third
    assert np.all(err <= np.maximum(2 * STEP, np.abs(x)) + 1e-9)


def test_trellis_has_the_granular_gain_over_each_quantiser_alone():
    """λ = 0 minimises Σ (x/Δ − r)² over the paths.  Each quantiser alone has the step
    2Δ; the trellis does better than uniform rounding at 2Δ by more than 1.2 dB."""
    x = _weights(seed=2)
    levels, _ = dq.trellis_levels(x, STEP, 0.0)
    mse = np.mean((dq.dequant(levels, STEP).astype(np.float64) - x) ** 2)
    coarse = np.mean((np.rint(x / (2 * STEP)) * 2 * STEP - x) ** 2)
    assert mse < 10 ** -0.12 * coarse


@needs_c
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_c_and_pure_python_choose_the_same_levels(lam):
    x = np.concatenate([_weights(2_000, seed=3), _weights(1_000, seed=4, scale=3.0),
                        np.zeros(50, np.float32)])
    u = x.astype(np.float64) / STEP
    mmax = int(min(4096, np.abs(u).max() // 2 + 2))
    rates = dq.rate_tables(np.rint(u / 2).astype(np.int64), np.zeros(x.size, np.uint8), mmax)
    outs = []
    for run in (dq._c.trellis, dq._trellis_pure):
        lv, cl = np.zeros(x.size, np.int32), np.zeros(x.size, np.uint8)
        run(x, STEP, lam, rates.reshape(-1), mmax, lv, cl)
        outs.append((lv, cl))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    pure = np.empty(x.size, np.float32)
    assert dq._dequant_pure(outs[0][0], STEP, pure)
    np.testing.assert_array_equal(dq.dequant(outs[0][0], STEP), pure)


def test_blocks_join_in_state():
    """Past one Viterbi block the next starts in the state the last one ended in."""
    x = _weights(dq.BLOCK + 5_000, seed=5)
    levels, cls = dq.trellis_levels(x, STEP)
    np.testing.assert_array_equal(cls, _states_of(levels))
    err = dq.dequant(levels, STEP).astype(np.float64) - x
    assert np.sqrt(np.mean(err ** 2)) < 0.5 * STEP


@pytest.mark.parametrize("spec", ["dq:STEP+cabac", "dq:STEP:rd=0.1+cabac", "dq:STEP+bz2",
                                  "dq:STEP"])
def test_codec_round_trip_is_the_encoders_reconstruction(spec):
    x = torch.from_numpy(_weights(30_000, seed=6)).reshape(100, 300)
    codec = make_codec(spec.replace("STEP", repr(STEP)))
    frames, recon = codec.encode_with_reconstruction(x)
    out = codec.decode(frames)
    assert torch.equal(out, recon)
    err = (out.reshape(-1) - x.reshape(-1)).abs()
    assert bool((err <= torch.clamp(x.reshape(-1).abs(), min=2 * STEP) + 1e-9).all())


def test_fewer_bits_than_rounding_at_equal_rmse():
    """On Laplace weights, dq needs fewer bits than plain rounding at the same RMSE
    (plain's bits interpolated on a grid of steps)."""
    x = torch.from_numpy(_weights(200_000, seed=7, scale=0.01))

    def bits_rmse(spec):
        frames = make_codec(spec).encode(x)
        out = make_codec(spec).decode(frames)
        return 8 * wire_size(frames) / x.numel(), float(((out - x) ** 2).mean().sqrt())
    b, r = bits_rmse(f"dq:{STEP!r}+cabac")
    plain = [bits_rmse(f"quant:{2.0 ** (-k / 4)!r}+cabac") for k in range(30, 40)]
    pb, pr = np.log([p[0] for p in plain]), np.log([p[1] for p in plain])
    at = float(np.exp(np.interp(np.log(r), pr[::-1], pb[::-1])))
    assert b < 0.98 * at, (b, at)


@pytest.mark.parametrize("spec", ["dq", "dq:0", "dq:-1", "dq:x", "dq:0.1:rd=-1", "dq:0.1:lam=1",
                                  "dq:0.1:rd=", "topk:0.1+dq:0.1+cabac", "stc:0.1+dq:0.1",
                                  "randk:0.1+dq:0.1+golomb"])
def test_bad_specs_are_config_errors(spec):
    with pytest.raises(ConfigError):
        make_codec(spec)


def test_dq_quantises_powersgd_factors():
    x = torch.randn(64, 48)
    codec = make_codec(f"powersgd:2+dq:{2.0 ** -10!r}+cabac")
    frames, recon = codec.encode_with_reconstruction(x)
    assert torch.equal(codec.decode(frames), recon)


def test_values_too_large_for_the_step_are_refused():
    with pytest.raises(CodecError):
        dq.trellis_levels(np.array([1e30], np.float32), 1e-6)
    with pytest.raises(CodecError):
        make_codec("dq:0.1").encode(torch.tensor([float("nan"), 1.0]))


def test_hostile_levels_are_codec_errors_or_finite():
    """Whatever levels arrive, decoding gives float32 values or a CodecError."""
    rng = np.random.default_rng(8)
    with pytest.raises(CodecError):
        dq.dequant(np.array([2**40], np.int64), 1.0)
    with pytest.raises(CodecError):
        dq.dequant(np.array([2**30 - 1], np.int64), 1e30)  # overflows float32
    big = rng.integers(-2**31, 2**31, 1000).astype(np.int32)
    assert np.isfinite(dq.dequant(big, 1e-3)).all()
    # a plain quant blob is refused by a dq codec: its header names another stage
    x = torch.from_numpy(_weights(5_000, seed=9))
    blob = make_codec(f"quant:{STEP!r}+cabac").encode(x)
    with pytest.raises(CodecError):
        make_codec(f"dq:{STEP!r}+cabac").decode(blob)
    # any levels CABAC can carry (|k| <= 2**30) reconstruct to finite float32
    lv = rng.integers(-2**30, 2**30 + 1, 2_000).astype(np.int32)
    out = dq.dequant(cabac.decode_levels(cabac.encode_levels(lv), lv.size), STEP)
    assert np.isfinite(out).all() and out.dtype == np.float32


@needs_c
def test_private_trellis_refuses_what_it_cannot_search():
    x, lv, cl = _weights(100), np.zeros(100, np.int32), np.zeros(100, np.uint8)
    with pytest.raises(ValueError):
        dq._c.trellis(x, STEP, 0.1, np.full(10, np.inf), 4, lv, cl)
    with pytest.raises(ValueError):
        dq._c.trellis(x, STEP, 0.1, np.zeros(10), 5, lv, cl)  # table size disagrees


@pytest.mark.parametrize("lam", [float("inf"), float("nan"), -1.0])
def test_lambda_must_be_finite_and_non_negative(lam):
    with pytest.raises(CodecError):
        dq.trellis_levels(_weights(10), STEP, lam)
