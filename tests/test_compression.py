"""Contract tests for every codec in p2pfl.compression (one shared suite)."""
import math
import time

import numpy as np
import pytest
import torch

from p2pfl.compression import (STAGES, CodecError, ErrorFeedback, decode_many, encode_many,
                               golomb_b, golomb_expected_bits, make_codec, parse_spec,
                               wants_error_feedback, wire_size)
from p2pfl.errors import ConfigError

torch.set_num_threads(1)

SPECS = ["none", "fp16", "bf16", "quant:0.0039", "quant:0.0039+cabac", "stc:0.01+golomb",
         "topk:0.01+quant:0.001+cabac", "sbc:0.01+golomb", "topk:0.01+golomb+deflate",
         "uniform:8+lzma", "qsgd:16", "terngrad", "sign", "randk:0.01", "threshold:0.001",
         "powersgd:2", "randk:0.05:scaled", "stc:0.01+cabac", "topk:0.1+fp16+bz2",
         "uniform:3", "topk:0.05+sign+golomb", "powersgd:1+bf16+deflate", "none+lzma",
         "qsgd:4+cabac", "terngrad+deflate", "threshold:0.5+quant:0.01+golomb+cabac"]
CABAC_SPECS = [s for s in SPECS if "cabac" in s]
LOSSLESS = ["none", "none+deflate", "none+bz2", "none+lzma", "deflate"]


def codec(spec, seed=0):
    if "cabac" in spec:
        pytest.importorskip("p2pfl.compression.cabac")
    return make_codec(spec, error_feedback=False, seed=seed)


def sample(shape=(40, 50), seed=0, scale=0.01):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_shape_dtype_and_exact_reconstruction(spec):
    c = codec(spec)
    x = sample()
    frames, recon = c.encode_with_reconstruction(x)
    y = c.decode(frames)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert torch.equal(y, recon)  # the sender knows exactly what the receiver gets
    assert torch.equal(c.decode(b"".join(bytes(f) for f in frames)), y)  # one frame too
    assert wire_size(frames) == len(b"".join(bytes(f) for f in frames))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("spec", LOSSLESS)
def test_lossless_is_exact(spec):
    x = sample((7, 11, 3))
    assert torch.equal(codec(spec).decode(codec(spec).encode(x)), x)


def test_quant_error_at_most_half_step():
    for step in (0.0039, 0.001, 0.37):
        x = sample((1000,), scale=0.05)
        y = codec(f"quant:{step}").decode(codec(f"quant:{step}").encode(x))
        assert (y - x).abs().max() <= step / 2 * (1 + 1e-6) + 1e-7


def test_cabac_and_packed_levels_decode_identically():
    pytest.importorskip("p2pfl.compression.cabac")
    x = sample((3000,))
    for spec in ("quant:0.0039", "topk:0.01+quant:0.001", "stc:0.02", "qsgd:8"):
        a, b = codec(spec), codec(spec + "+cabac")
        assert torch.equal(a.decode(a.encode(x)), b.decode(b.encode(x)))


@pytest.mark.parametrize("spec,k", [("topk:0.01", 20), ("randk:0.01", 20), ("stc:0.01", 20),
                                    ("sbc:0.01", 20), ("topk:0.013+golomb", 26),
                                    ("stc:0.07+golomb", 140)])
def test_sparsifiers_keep_exactly_k(spec, k):
    x = sample()
    assert int((codec(spec).decode(codec(spec).encode(x)) != 0).sum()) == k


def test_topk_keeps_largest_and_stc_sbc_values():
    x = sample((1000,))
    k = 10
    y = codec("topk:0.01").decode(codec("topk:0.01").encode(x))
    top = torch.topk(x.abs(), k).indices
    assert torch.equal(y[top], x[top])
    s = codec("stc:0.01").decode(codec("stc:0.01").encode(x))
    mu = x.abs()[top].mean()
    assert torch.allclose(s[top], mu * x[top].sign())
    b = codec("sbc:0.01").decode(codec("sbc:0.01").encode(x))
    vals = b[b != 0]
    assert vals.numel() == k and torch.all(vals == vals[0])
    mu_pos, mu_neg = torch.topk(x, k).values.mean(), torch.topk(-x, k).values.mean()
    assert math.isclose(abs(vals[0].item()), max(mu_pos, mu_neg).item(), rel_tol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_all_zero_and_tiny_tensors(spec):
    for x in (torch.zeros(30, 20), torch.tensor(1.5), torch.tensor([-2.0]), torch.zeros(0),
              torch.zeros(3, 0), torch.full((2, 3), 0.25)):
        c = codec(spec)
        y = c.decode(c.encode(x))
        assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
        if x.numel() and not x.any():
            assert not y.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_input_dtypes(dtype):
    x = sample((5, 6)).to(dtype)
    y = codec("none").decode(codec("none").encode(x))
    assert y.dtype == torch.float32 and torch.equal(y, x.float())


def test_frames_do_not_alias_the_input():
    x = sample((100_000,))
    c = codec("none")
    frames = c.encode(x)
    x.zero_()
    assert c.decode(frames).abs().sum() > 0


def test_exact_sizes():
    x = sample((1000,))
    # none: 8-byte header (magic, 0 stages... here 1 id) + flags + dtype + 4n
    frames = codec("none").encode(x)
    assert wire_size(frames) == 1 + 1 + 1 + 1 + 1 + 2 + 1 + 1 + 4000
    assert wire_size(codec("fp16").encode(x)) == 9 + 2000
    # stc+golomb, byte by byte: header 8, flags 1, k varint 1, b 1, remainders, unary
    # section (length varint + bytes), mode 1, scale 4 (μ as float32), one sign bit per
    # non-zero
    k, n = 10, 1000
    pos = np.sort(torch.topk(x.abs(), k).indices.numpy())
    b = golomb_b(k, n)
    gaps = np.diff(pos, prepend=-1) - 1
    unary_bytes = math.ceil(int(((gaps >> b) + 1).sum()) / 8)
    expect = 8 + 1 + 1 + 1 + math.ceil(k * b / 8) + 1 + unary_bytes + 1 + 4 + math.ceil(k / 8)
    assert wire_size(codec("stc:0.01+golomb").encode(x)) == expect
    # with the implicit header of a per-tensor message, 7 bytes less
    implicit = codec("stc:0.01+golomb").encode_with_reconstruction(x, False, implicit=True)[0]
    assert wire_size(implicit) == expect - 7
    # sbc: the same support coding, no per-value bits (2 bytes of level packing header)
    assert wire_size(codec("sbc:0.01+golomb").encode(x)) < expect + 3


def test_golomb_parameter_and_rate():
    assert golomb_b(10_000, 1_000_000) == 6
    assert abs(golomb_expected_bits(10_000, 1_000_000) - 8.1) < 0.05
    # b* = 1 + ⌊log₂(ln(φ−1) / ln(1−q))⌋, q = (k+1)/(n+1) (ALGORITHMS.md); hand values:
    assert golomb_b(0, 10) == 3  # q = 1/11: ratio 5.05, no non-zero still has q > 0
    assert golomb_b(1, 10) == 2  # q = 2/11: ratio 2.40
    assert golomb_b(1000, 1_000_000) == 9  # ratio 480.5
    assert golomb_b(100_000, 1_000_000) == 3  # ratio 4.57
    assert golomb_b(0, 1) == 0  # ratio 0.69: 1 + ⌊−0.53⌋ = 0
    assert golomb_b(1, 2) == 0  # ratio 0.44: the formula's −1, clamped to b ≥ 0
    assert golomb_b(10, 10) == 0  # q = 1: every entry is a non-zero
    assert golomb_b(0, 10 ** 12) == 31  # the formula's 39, capped at the coder's 31
    g = torch.Generator().manual_seed(1)
    n = 1_000_000
    x = torch.randn(n, generator=g)
    bits = 8 * wire_size(codec("stc:0.01+golomb").encode(x)) / n
    assert 0.089 < bits < 0.093, bits  # ALGORITHMS.md: 0.0911 measured, bound 0.0908


def test_golomb_positions_round_trip_edge_gaps():
    x = torch.zeros(5000)
    x[[0, 1, 2, 4999]] = torch.tensor([1.0, -2.0, 3.0, 4.0])
    y = codec("threshold:0.5+golomb").decode(codec("threshold:0.5+golomb").encode(x))
    assert torch.equal(x, y)


def test_powersgd_state_and_dense_fallback():
    c = codec("powersgd:2")
    x = sample((60, 80))
    c.encode(x)
    q = c.stages[0].warm_start[(60, 80)].copy()
    c.encode(x)
    assert not np.array_equal(q, c.stages[0].warm_start[(60, 80)])
    c.reset()
    assert not c.stages[0].warm_start
    v = sample((100,))
    assert torch.equal(c.decode(c.encode(v)), v)  # 1-D: dense
    low = torch.outer(torch.arange(60.0), torch.ones(80))  # rank 1: recovered exactly-ish
    assert torch.allclose(c.decode(c.encode(low)), low, atol=1e-3)
    conv = sample((8, 3, 4, 4))
    assert c.decode(c.encode(conv)).shape == conv.shape


def test_error_feedback_invariant_and_defaults():
    ef = make_codec("topk:0.05", seed=0, error_feedback=True)
    assert isinstance(ef, ErrorFeedback) and wants_error_feedback(ef.codec)
    # make_codec adds no error feedback unless asked: the plan decides once
    assert not isinstance(make_codec("topk:0.05"), ErrorFeedback)
    assert not isinstance(make_codec("qsgd:16"), ErrorFeedback)
    assert isinstance(make_codec("none", error_feedback=True), ErrorFeedback)
    for i in range(5):
        x = sample(seed=i)
        old = ef.residual.clone() if ef.residual is not None else torch.zeros_like(x)
        frames, sent = ef.encode_with_reconstruction(x)
        assert torch.equal(ef.decode(frames), sent)
        assert torch.allclose(old + x, sent + ef.residual, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError):
        ef.encode(torch.zeros(3))
    ef.reset()
    assert ef.residual is None
    ef.encode(torch.zeros(3))


def test_encode_many():
    c = codec("stc:0.1+golomb")
    ts = [sample((10, 10)), sample((5,)), torch.tensor(2.0)]
    out = decode_many(c, encode_many(c, ts))
    assert [o.shape for o in out] == [t.shape for t in ts]
    efs = [make_codec("topk:0.1", error_feedback=True) for _ in ts]
    assert len(encode_many(efs, ts)) == 3
    with pytest.raises(ValueError):
        encode_many(efs[:2], ts)


@pytest.mark.parametrize("spec,msg", [
    ("nope", "valid stages"), ("", "empty"), ("topk", "takes 1"), ("topk:2", "P"),
    ("topk:abc", "P"), ("quant:-1", "STEP"), ("uniform:1", "BITS"), ("qsgd:0", "LEVELS"),
    ("golomb+topk:0.1", "order"), ("quant:0.1+golomb", "sparsifier"),
    ("stc:0.01+quant:0.1", "already quantises"), ("topk:0.01+cabac", "integer levels"),
    ("fp16+cabac", "integer levels"), ("topk:0.1+topk:0.1", "order"),
    ("randk:0.1:wrong", "scaled"), ("deflate:12", "LEVEL"), ("none+deflate+lzma", "order"),
])
def test_bad_specs_raise_config_error(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        make_codec(spec)


def test_registry_and_names():
    assert len({cls.wire_id for cls in STAGES.values()}) == len(STAGES)
    assert parse_spec(" TopK:0.01 + Golomb ") == [("topk", ["0.01"]), ("golomb", [])]
    assert make_codec("topk:0.01+golomb", error_feedback=False).name == "topk:0.01+golomb"
    assert make_codec("stc:0.01").biased and make_codec("qsgd:4").stochastic
    assert not make_codec("randk:0.1:scaled").biased


# -- malformed input --------------------------------------------------------------
def _decode_or_codec_error(c, blob):
    t = time.perf_counter()
    try:
        y = c.decode(blob)
        assert isinstance(y, torch.Tensor)
    except CodecError:
        pass
    assert time.perf_counter() - t < 0.5


@pytest.mark.parametrize("spec", SPECS)
def test_truncation_at_every_cut_raises(spec):
    c = codec(spec)
    blob = b"".join(bytes(f) for f in c.encode(sample((12, 10), scale=1.0)))
    for cut in range(len(blob)):
        with pytest.raises(CodecError):
            c.decode(blob[:cut])
    with pytest.raises(CodecError):
        c.decode(blob + b"\0")


@pytest.mark.parametrize("spec", SPECS)
def test_random_bit_flips_are_safe(spec):
    c = codec(spec)
    blob = bytearray(b"".join(bytes(f) for f in c.encode(sample((12, 10), scale=1.0))))
    rng = np.random.default_rng(3)
    for _ in range(150):
        bad = bytearray(blob)
        for pos in rng.integers(0, 8 * len(bad), size=rng.integers(1, 4)):
            bad[pos // 8] ^= 1 << (pos % 8)
        _decode_or_codec_error(c, bytes(bad))
    for _ in range(30):
        _decode_or_codec_error(c, rng.bytes(int(rng.integers(0, 64))))


def _varint(v):
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


@pytest.mark.parametrize("spec", ["none", "stc:0.01+golomb", "topk:0.01+golomb+deflate",
                                  "quant:0.0039+cabac", "powersgd:2", "uniform:8+lzma",
                                  "threshold:0.1"])
def test_huge_declared_sizes_are_rejected_fast(spec):
    c = codec(spec)
    ids = c.codec.ids if hasattr(c, "codec") else c.ids
    head = bytes([0xA1, len(ids)]) + ids + bytes([0])
    hostile = [
        head + bytes([1]) + _varint(1 << 40),                       # numel over the limit
        head + bytes([2]) + _varint(1 << 20) + _varint(1 << 20),    # product over the limit
        head + bytes([1]) + _varint(1 << 27) + bytes([1]) + _varint(1 << 27) + b"\0" * 16,
        head + bytes([1]) + _varint(1 << 27) + _varint(1 << 40) + b"\0" * 16,
        head + bytes([1]) + _varint(1 << 27) + b"\xff" * 64,
        head + bytes([9]) + b"\x01" * 9,                            # ndim over the limit
        bytes([0xA1, 200]) + b"\0" * 10,
    ]
    for blob in hostile:
        t = time.perf_counter()
        with pytest.raises(CodecError):
            c.decode(blob)
        assert time.perf_counter() - t < 0.5


def test_blob_of_another_codec_is_rejected():
    with pytest.raises(CodecError, match="stages"):
        codec("topk:0.1").decode(codec("stc:0.1").encode(sample()))
    with pytest.raises(CodecError):
        codec("none").decode([b"abc", 5])


def test_scales_travel_as_float32_only_when_exact():
    x = sample((1000,))
    for spec in ("stc:0.01", "sbc:0.01", "sign", "quant:0.00390625"):  # ±1 levels, 2⁻⁸
        blob = bytes(codec(spec).encode(x)[0])
        assert codec(spec).decode(blob).equal(codec(spec).encode_with_reconstruction(x)[1])
        # the value kind follows the 7-byte header, the flags, and for a sparsifier k
        # (one varint byte) and its 10 raw positions: packed or signs, float32 scale
        kind = blob[8 + (1 + 4 * 10 if spec[:3] in ("stc", "sbc") else 0)]
        assert kind in (8 | 0x10, 9 | 0x10)
    # a step float32 cannot hold: 8 bytes, and the same reconstruction as ever
    assert bytes(codec("quant:0.01").encode(x)[0])[8] == 8  # packed, float64 scale
    frames, sent = codec("quant:0.01").encode_with_reconstruction(x)
    assert torch.equal(codec("quant:0.01").decode(frames), sent)
    assert wire_size(codec("quant:0.01").encode(x)) == wire_size(
        codec("quant:0.0078125").encode(x * 0.78125)) + 4
    # STC's μ rounded to float32 reconstructs exactly what the float64 μ did
    top = x.abs().topk(10).values.double().mean()
    assert codec("stc:0.01").decode(codec("stc:0.01").encode(x)).abs().max() == top.float()


def test_hostile_scales_and_implicit_headers():
    c = codec("stc:0.01")
    blob = bytearray(codec("stc:0.01").encode(sample((1000,)))[0])
    at = blob.index(bytes([9 | 0x10]))  # signs, float32 scale
    for bad in (struct_f32(float("nan")), struct_f32(float("inf"))):
        with pytest.raises(CodecError, match="non-finite"):
            c.decode(bytes(blob[:at + 1]) + bad + bytes(blob[at + 5:]))
    with pytest.raises(CodecError, match="unknown value encoding"):
        c.decode(bytes(blob[:at]) + bytes([0x10]) + bytes(blob[at + 1:]))  # float32 + flag
    implicit = bytes(c.encode_with_reconstruction(sample((1000,)), False, implicit=True)[0][0])
    assert implicit[0] == 0xA2
    with pytest.raises(CodecError, match="implicit"):
        c.decode(implicit)  # outside a per-tensor message: no shape to stand for
    assert c.decode(implicit, shape=(1000,)).shape == (1000,)
    with pytest.raises(CodecError):
        c.decode(implicit, shape=(5,))  # more entries than a smaller tensor has
    with pytest.raises(CodecError, match="limits"):
        c.decode(implicit, shape=(1 << 20, 1 << 20))


def struct_f32(v: float) -> bytes:
    return np.float32(v).tobytes()


def test_encode_rejects_bad_tensors():
    with pytest.raises(CodecError):
        codec("quant:0.1").encode(torch.tensor([float("nan"), 1.0]))
    with pytest.raises(CodecError):
        codec("quant:1e-30").encode(torch.tensor([1e10]))
    with pytest.raises(CodecError):
        make_codec("none", max_numel=10).encode(torch.zeros(11))


def test_bench_smoke():
    from p2pfl.compression.bench import format_codec_bench, run_codec_bench
    lines = []
    rows = run_codec_bench(["stc:0.01+golomb", "none"], json=True, repeats=1,
                           tensors={"t": sample((50, 40))}, out=lines.append)
    assert len(rows) == len(lines) == 2
    assert rows[0]["bits_per_param"] < 0.2 and rows[1]["rel_l2"] == 0.0
    assert rows[0]["vs_entropy"] > 0 and rows[1]["vs_entropy"] is None
    assert "stc:0.01+golomb" in format_codec_bench(rows)


@pytest.mark.parametrize("spec,x", [
    ("quant:0.00001", 0.5 + torch.rand(64, generator=torch.Generator().manual_seed(0))),
    ("quant:0.1", torch.tensor([1.0, 1e5])),
    ("quant:0.1", torch.tensor([-1e5, -1.0])),
])
def test_levels_packed_32_bits_wide_with_a_large_offset_decode(spec, x):
    """Levels whose range needs 32 bits, all positive (or all negative): the encoder
    packs them from their minimum, and the decoder took that for an overflow."""
    codec = make_codec(spec)
    out = codec.decode(codec.encode(x))
    torch.testing.assert_close(out, make_codec(spec).encode_with_reconstruction(x)[1]
                               .reshape(x.shape), atol=0, rtol=0)


def test_a_packed_level_beyond_int32_is_a_codec_error():
    codec = make_codec("quant:1")
    blob = bytearray(b"".join(bytes(memoryview(f)) for f in codec.encode(
        torch.tensor([2.0**30 - 2**20, 2.0**30]))))
    # the levels are packed from their minimum in 32 bits at the end of the blob:
    # the last four bytes are the larger one's offset; push it past int32
    blob[-4:] = (0xFFFFFFFF).to_bytes(4, "big")
    with pytest.raises(CodecError):
        codec.decode([bytes(blob)])


def test_k_is_the_exact_ceiling_at_tens_of_millions_of_entries():
    from p2pfl.compression.sparsify import count_k

    assert count_k(0.12347, 81_061_683) == 10_008_687  # a relative guard gave 10,008,686
    assert count_k(0.07, 100) == 7 and count_k(0.01, 9930) == 100  # 7.000...1 is 7
    assert count_k(0.1, 1001) == 101 and count_k(1e-9, 5) == 1


def test_sbc_sends_no_positions_for_an_all_zero_input():
    """Both sides' means are 0: k positions of value 0 cost bytes and carry nothing."""
    zeros = torch.zeros(1000)
    sbc, stc = make_codec("sbc:0.1+golomb"), make_codec("stc:0.1+golomb")
    blob = sbc.encode(zeros)
    assert wire_size(blob) <= wire_size(stc.encode(zeros))
    assert torch.equal(make_codec("sbc:0.1+golomb").decode(blob), zeros)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_fp16_refuses_non_finite_values_instead_of_saturating_them(bad):
    with pytest.raises(CodecError):
        make_codec("fp16").encode(torch.tensor([1.0, bad]))
    big = make_codec("fp16")  # large finite values still saturate
    assert big.decode(big.encode(torch.tensor([1e6]))).item() == 65504.0
