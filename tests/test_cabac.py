"""Tests of the DeepCABAC-style level coder (p2pfl.compression.cabac)."""
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pfl.compression import _cabac_pure, cabac, make_codec
from p2pfl.compression.cabac import (
    MAG_MAX,
    decode_levels,
    empirical_entropy_bits,
    encode_levels,
)
from p2pfl.compression.errors import CodecError
from p2pfl.compression.reference import laplace_levels, sparse_levels

needs_c = pytest.mark.skipif(not cabac.HAVE_C, reason="C extension _cabac not built")
HSET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def roundtrip(levels):
    levels = np.asarray(levels)
    data = encode_levels(levels)
    assert isinstance(data, bytes)
    out = decode_levels(data, len(levels))
    assert out.dtype == np.int32 and out.shape == (len(levels),)
    np.testing.assert_array_equal(out, levels.astype(np.int64))
    return data


# --- exact round trips -------------------------------------------------------
level_arrays = st.one_of(
    hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-3, 3)),
    hnp.arrays(np.int32, st.integers(0, 300), elements=st.integers(-40, 40)),
    hnp.arrays(np.int64, st.integers(0, 120), elements=st.integers(-(2**20), 2**20)),
    hnp.arrays(np.int64, st.integers(0, 60), elements=st.integers(-MAG_MAX, MAG_MAX)),
    hnp.arrays(np.int8, st.integers(0, 200)),
    hnp.arrays(np.uint16, st.integers(0, 100)),
)


@HSET
@given(level_arrays)
def test_roundtrip_random(levels):
    roundtrip(levels)


@pytest.mark.parametrize(
    "levels",
    [
        np.zeros(0, np.int32),
        np.zeros(10_000, np.int32),
        np.array([0]),
        np.array([1]),
        np.array([-1]),
        np.array([MAG_MAX]),
        np.array([-MAG_MAX, MAG_MAX, 0, 15, -15, 14, 16]),
        np.arange(-300, 300),
        np.full(5000, -7, np.int16),
    ],
)
def test_roundtrip_edge_cases(levels):
    roundtrip(levels)


def test_empty_and_all_zero_streams_are_tiny():
    assert encode_levels(np.zeros(0, np.int32)) == b""
    assert len(encode_levels(np.zeros(100_000, np.int32))) <= 8
    assert decode_levels(b"", 0).shape == (0,)


def test_decoded_array_is_writable():
    out = decode_levels(encode_levels([1, 2, 3]), 3)
    out[0] = 5
    assert out.flags.writeable


# --- bad input ---------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 2), np.int32),
        np.array([0.5, 1.0]),
        np.array([MAG_MAX + 1]),
        np.array([-MAG_MAX - 1]),
        np.array([2**40], np.int64),
        np.array([2**63], np.uint64),
        np.array([True, False]),
    ],
)
def test_encode_rejects_bad_levels(bad):
    with pytest.raises(CodecError):
        encode_levels(bad)


@pytest.mark.parametrize("n", [-1, 1.5, "3"])
def test_decode_rejects_bad_n(n):
    with pytest.raises(CodecError):
        decode_levels(b"\x01\x02", n)


def test_decode_rejects_non_bytes():
    with pytest.raises(CodecError):
        decode_levels("abc", 3)


def test_huge_n_rejected_before_allocation():
    t = time.perf_counter()
    for data, n in [(b"", 2**40), (b"abc", 2**28 + 1), (b"x" * 10, 10**8), (b"", 2**22)]:
        with pytest.raises(CodecError):
            decode_levels(data, n)
    assert time.perf_counter() - t < 0.5
    # the bound is safe: the most compressible stream (all zeros) still fits
    n = 2**21
    data = encode_levels(np.zeros(n, np.int32))
    assert n <= cabac.max_levels_for(len(data))
    np.testing.assert_array_equal(decode_levels(data, n), 0)


# --- hostile input -----------------------------------------------------------
def _decode_or_error(decoder, data, n):
    try:
        out = decoder(data, n)
    except CodecError as exc:
        return ("error", str(exc))
    assert len(out) == n
    return ("ok", [int(x) for x in out])


def test_truncated_corrupted_random_never_crash():
    rng = np.random.default_rng(7)
    levels = laplace_levels(3000, seed=3)
    data = encode_levels(levels)
    t = time.perf_counter()
    errors = 0
    cuts = list(range(0, len(data), max(1, len(data) // 40))) + [len(data) - 1]
    for cut in cuts:
        # up to 4 missing bytes may read as zeros and decode to something
        errors += _decode_or_error(decode_levels, data[:cut], len(levels))[0] == "error"
    assert errors >= len(cuts) - 2
    with pytest.raises(CodecError):  # trailing garbage
        decode_levels(data + b"\x01" * 5, len(levels))
    for _ in range(200):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(0, len(bad)))] ^= 1 << int(rng.integers(0, 8))
        _decode_or_error(decode_levels, bytes(bad), len(levels))
    for _ in range(300):
        blob = rng.bytes(int(rng.integers(0, 64)))
        n = int(rng.integers(0, 2000))
        _decode_or_error(decode_levels, blob, n)
        _decode_or_error(decode_levels, blob, cabac.max_levels_for(len(blob)) // 64)
    # a guard against hangs: the pure-Python coder (no compiler) takes 5.4-5.8 s here
    assert time.perf_counter() - t < (5 if cabac.HAVE_C else 30)


@HSET
@given(st.binary(max_size=48), st.integers(0, 400))
def test_random_bytes_decode_or_error(blob, n):
    _decode_or_error(decode_levels, blob, n)


# --- C core and pure-Python fallback write the same bitstream ----------------
@needs_c
@HSET
@given(level_arrays)
def test_c_and_python_bitstreams_identical(levels):
    data = encode_levels(levels)
    assert _cabac_pure.encode_pure(np.asarray(levels).astype(np.int64).tolist()) == data
    assert _cabac_pure.decode_pure(data, len(levels)) == [int(x) for x in levels]


def _hostile_blobs(data: bytes, rng, count: int) -> list:
    """``count`` random blobs, then ``count`` copies of ``data`` with one bit flipped
    and cut short."""
    blobs = [rng.bytes(int(rng.integers(0, 40))) for _ in range(count)]
    for _ in range(count):
        bad = bytearray(data)
        bad[int(rng.integers(0, len(bad)))] ^= 1 << int(rng.integers(0, 8))
        blobs.append(bytes(bad[: int(rng.integers(len(bad) // 2, len(bad) + 1))]))
    return blobs


@needs_c
def test_c_and_python_agree_on_hostile_input():
    rng = np.random.default_rng(11)
    blobs = _hostile_blobs(encode_levels(laplace_levels(400, seed=5)), rng, 150)
    for blob in blobs:
        n = int(rng.integers(0, 500))
        assert _decode_or_error(decode_levels, blob, n) == _decode_or_error(
            _cabac_pure.decode_pure, blob, n
        )


def test_pure_python_roundtrip_small():
    levels = np.concatenate([laplace_levels(1500, seed=9), sparse_levels(1500, seed=9),
                             [MAG_MAX, -MAG_MAX]])
    data = _cabac_pure.encode_pure(levels.tolist())
    assert _cabac_pure.decode_pure(data, len(levels)) == levels.tolist()


# --- compression bound: within 3 % of n * H0 ---------------------------------
@pytest.mark.parametrize(
    "levels",
    [laplace_levels(200_000), sparse_levels(200_000), sparse_levels(200_000, std=np.sqrt(1e-3))],
    ids=["laplace", "sparse-std1e-3", "sparse-var1e-3"],
)
def test_within_3_percent_of_entropy(levels):
    bits = 8 * len(encode_levels(levels))
    h0 = empirical_entropy_bits(levels)
    assert bits <= 1.03 * h0, (bits / len(levels), h0 / len(levels))


def test_rows_of_changing_scale_cost_less_than_the_static_entropy():
    """Format 2's dual-rate contexts follow statistics that change within a tensor:
    rows of 512 levels alternating between Laplace scales 10 and 1 code 2 % under
    n * H0 (the single-rate format 1 coder got 0.6 % under it)."""
    rng = np.random.default_rng(3)
    scale = np.where(np.arange(390) % 2, 1.0, 10.0)[:, None]
    levels = np.rint(rng.laplace(0, 1, (390, 512)) * scale).astype(np.int32).reshape(-1)
    data = roundtrip(levels)
    assert 8 * len(data) <= 0.99 * empirical_entropy_bits(levels)


def _single_rate_p15(bins, maxshift):
    """P(0) in 15 bits of one single-rate context after ``bins`` (cabac.py's model)."""
    from p2pfl.compression._cabac_model import _PONE, _PROB_SHIFT

    p, shift, left = _PONE >> 1, 1, 2
    for bit in bins:
        p = p - (p >> shift) if bit else p + ((_PONE - p) >> shift)
        if shift < maxshift:
            left -= 1
            if left == 0:
                shift, left = shift + 1, 1 << (shift + 1)
    return p >> _PROB_SHIFT


def test_dual_rate_model():
    """sig is single-rate; a gt context codes with the mean of a slow estimate and a
    fast one, so after a change it moves further than the slow estimate alone."""
    from p2pfl.compression._cabac_model import _GT0, _SIG0, SHIFT_GT, SHIFT_SIG

    prob, update = _cabac_pure._models()
    bins = [0] * 3000 + [1] * 40
    for bit in bins:
        update(_SIG0, bit)
        update(_GT0, bit)
    assert prob(_SIG0) == _single_rate_p15(bins, SHIFT_SIG)
    slow = _single_rate_p15(bins, SHIFT_GT)
    assert prob(_GT0) < slow - 2000  # the fast half has moved most of the way


def test_empirical_entropy_bits():
    assert empirical_entropy_bits([]) == 0.0
    assert empirical_entropy_bits([5, 5, 5]) == 0.0
    assert empirical_entropy_bits([0, 1, 0, 1]) == pytest.approx(4.0)
    assert empirical_entropy_bits(np.array([0, 1, 2, 3])) == pytest.approx(8.0)


# --- C encoder: buffer growth, carries, bypass bins; C quantiser ----------------
@needs_c
@pytest.mark.parametrize("temporal", [False, True])
def test_c_and_python_identical_on_long_and_wide_streams(temporal):
    """Outputs far beyond the first buffer guess (n/2 bytes), long 0xFF/carry runs,
    Exp-Golomb bypass bins and every context group, against the pure coder."""
    rng = np.random.default_rng(21)
    parts = [rng.integers(-MAG_MAX, MAG_MAX + 1, 700), laplace_levels(2000, seed=4),
             np.full(500, MAG_MAX), rng.integers(-20, 21, 800), np.zeros(900, np.int64),
             rng.geometric(0.02, 600) * rng.choice([-1, 1], 600)]
    levels = np.concatenate(parts).astype(np.int32)
    ref = np.roll(levels, 7) // 3 if temporal else None
    data = encode_levels(levels, ref)
    assert len(data) > 4 * len(levels) // 3
    pure_ref = None if ref is None else ref.tolist()
    assert _cabac_pure.encode_pure(levels.tolist(), pure_ref) == data
    np.testing.assert_array_equal(decode_levels(data, len(levels), ref), levels)


@needs_c
def test_c_encoder_rejects_out_of_range_int32():
    levels = np.zeros(50, np.int32)
    levels[37] = -MAG_MAX - 1
    with pytest.raises(CodecError):
        encode_levels(levels)
    levels[37] = np.iinfo(np.int32).max
    with pytest.raises(CodecError):
        encode_levels(levels, np.zeros(50, np.int32))


@needs_c
@pytest.mark.parametrize("step", [2.0**-8, 2.0**-20, 0.001, 0.0039, 1 / 3, 7.5, 2.0**10])
def test_c_quantiser_matches_numpy(step):
    rng = np.random.default_rng(5)
    halves = np.arange(-4001, 4002) * 0.5 * step  # ties: rounded half to even
    for x in [rng.laplace(0, 0.02, 10_001), halves, rng.standard_cauchy(3001) * 1e3 * step,
              np.zeros(3), np.array([-0.0])]:
        x = x.astype(np.float32)
        expect = np.rint(np.divide(x, step, dtype=np.float64))
        for n in {x.size, max(x.size - 1, 0), min(x.size, 5), min(x.size, 1), 0}:
            got = cabac.step_levels(x[:n], step)  # SIMD body and scalar tail
            assert (got is not None) == bool(np.all(np.abs(expect[:n]) < 2**30))
            if got is not None:
                assert got.dtype == np.int32
                np.testing.assert_array_equal(got, expect[:n])


@needs_c
def test_c_quantiser_declines_what_it_cannot_code():
    for bad in [np.nan, np.inf, -np.inf, (2**30 - 0.5) * 2.0**-8, 1e30]:
        x = np.full(9, 0.25, np.float32)
        x[6] = bad
        assert cabac.step_levels(x, 2.0**-8) is None
    x = np.float32([2**22 - 0.5, -(2**22 - 0.5), 1.5 * 2.0**-8])  # exact in float32
    np.testing.assert_array_equal(cabac.step_levels(x, 2.0**-8), [2**30 - 128, 128 - 2**30, 2])
    assert cabac.step_levels(np.zeros(4), 0.5) is None  # float64: the caller's path


# --- dq mode: contexts that follow the dependent quantiser's state ------------
@pytest.mark.parametrize("with_ref", [False, True])
def test_dq_mode_c_and_python_identical_and_round_trip(with_ref):
    rng = np.random.default_rng(31)
    levels = np.concatenate([laplace_levels(3000, seed=6) // 2, np.zeros(400, np.int64),
                             rng.integers(-30, 31, 500), [MAG_MAX, -MAG_MAX]]).astype(np.int32)
    ref = np.roll(levels, 3) if with_ref else None
    pure_ref = None if ref is None else ref.tolist()
    data = encode_levels(levels, ref, dependent=True)
    assert _cabac_pure.encode_pure(levels.tolist(), pure_ref, True) == data
    np.testing.assert_array_equal(decode_levels(data, levels.size, ref, dependent=True), levels)
    assert _cabac_pure.decode_pure(data, levels.size, pure_ref, True) == levels.tolist()
    if with_ref:
        assert data == encode_levels(levels, ref)  # temporal mode takes precedence
    else:
        assert data != encode_levels(levels)  # dq mode has contexts of its own


@needs_c  # without the C core both sides are the pure coder
def test_dq_mode_c_and_python_agree_on_hostile_input():
    rng = np.random.default_rng(12)
    blobs = _hostile_blobs(encode_levels(laplace_levels(400, seed=7), dependent=True), rng, 60)
    for blob in blobs:
        n = int(rng.integers(0, 500))
        assert _decode_or_error(lambda b, k: decode_levels(b, k, dependent=True), blob, n) == \
            _decode_or_error(lambda b, k: _cabac_pure.decode_pure(b, k, None, True), blob, n)


def test_a_format_1_blob_is_refused_not_misread():
    """Format 2 changed the coder's probabilities; the stage id changed with it (51 ->
    52), so a blob from a format-1 peer fails on its header instead of decoding to
    wrong levels."""
    codec = make_codec("quant:0.01+cabac")
    blob = b"".join(bytes(f) for f in codec.encode(torch.linspace(-1, 1, 500)))
    assert blob.count(bytes([4, 52])) >= 1
    old = blob.replace(bytes([4, 52]), bytes([4, 51]), 1)
    with pytest.raises(CodecError):
        codec.decode([old])
