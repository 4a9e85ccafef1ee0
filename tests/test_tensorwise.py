"""Per-tensor exchange (compression/tensorwise.py): one codec per parameter tensor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from p2pfl.compression import CodecError, make_codec, wire_size
from p2pfl.compression.feedback import codec_state, restore_codec
from p2pfl.compression.sparsify import count_k

# the mnist1d CNN's parameters: conv kernels, biases, a linear layer
SHAPES = [(32, 1, 5), (32,), (32, 32, 3), (32,), (10, 160), (10,)]
N = sum(math.prod(s) for s in SHAPES)
SPECS = ["none", "fp16", "bf16", "quant:0.01", "quant:0.01+cabac", "uniform:4", "qsgd:16",
         "terngrad", "sign", "topk:0.05", "topk:0.05:global", "randk:0.1", "threshold:1.5",
         "sbc:0.05", "stc:0.05+golomb", "stc:0.05:global+cabac", "powersgd:2",
         "powersgd:1+fp16+deflate", "topk:0.1+quant:0.001+cabac", "none+lzma", "none+bz2"]


def _parts(x: torch.Tensor) -> list:
    return list(torch.split(x, [math.prod(s) for s in SHAPES]))


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_is_the_reconstruction_for_every_stage(spec):
    codec = make_codec(spec, seed=3, shapes=SHAPES)
    x = torch.randn(N, generator=torch.Generator().manual_seed(1))
    frames, sent = codec.encode_with_reconstruction(x)
    out = make_codec(spec, seed=99, shapes=SHAPES).decode(frames)  # decoding is stateless
    assert out.shape == (N,) and torch.equal(out, sent)
    assert wire_size(frames) == sum(memoryview(f).nbytes for f in frames)
    assert len(frames) >= 1 + len(SHAPES)  # the index, then each tensor's frames
    if spec in ("none", "none+lzma", "none+bz2"):
        assert torch.equal(out, x)


def test_error_feedback_keeps_one_residual_per_tensor():
    ef = make_codec("stc:0.02+golomb", error_feedback=True, seed=0, shapes=SHAPES)
    g = torch.Generator().manual_seed(5)
    residual = torch.zeros(N)
    for _ in range(3):
        x = torch.randn(N, generator=g)
        v = residual + x
        _, sent = ef.encode_with_reconstruction(x)
        for v_l, s_l, e_l in zip(_parts(v), _parts(sent), _parts(ef.residual)):
            torch.testing.assert_close(e_l, v_l - s_l)  # e_l = e_l + x_l − C_l(e_l + x_l)
            assert 0 < int((s_l != 0).sum()) <= count_k(0.02, v_l.numel())
        residual = ef.residual


def test_k_per_tensor_is_the_default_and_global_uses_one_threshold():
    x = torch.randn(N, generator=torch.Generator().manual_seed(2))
    x[:160] = 10 + x[:160].abs()  # the first tensor holds the largest entries
    per = make_codec("topk:0.05", shapes=SHAPES).encode_with_reconstruction(x)[1]
    for part, shape in zip(_parts(per), SHAPES):
        assert int((part != 0).sum()) == count_k(0.05, math.prod(shape))
    glob = make_codec("topk:0.05:global", shapes=SHAPES).encode_with_reconstruction(x)[1]
    kept = [int((p != 0).sum()) for p in _parts(glob)]
    k = count_k(0.05, N)
    assert k <= sum(kept) <= k + len(SHAPES)  # each tensor keeps at least one entry
    assert kept[0] == 160  # every entry of the loud tensor is among the k largest
    threshold = np.sort(np.abs(x.numpy()))[N - k]
    again = make_codec("topk:0.05:global", shapes=SHAPES)
    for _ in range(3):  # the model's k holds message after message
        sent = again.encode_with_reconstruction(x)[1]
        assert k <= int((sent != 0).sum()) <= k + len(SHAPES)
    below = int(((glob != 0) & (glob.abs() < threshold)).sum())
    assert below <= len(SHAPES) - 1  # only a tensor's one forced entry may be below it


def test_powersgd_codes_kernels_as_matrices_and_sends_biases_dense():
    x = torch.randn(N, generator=torch.Generator().manual_seed(4))
    codec = make_codec("powersgd:2", seed=0, shapes=SHAPES)
    frames = codec.encode(x)
    assert wire_size(frames) * 6 < 4 * N
    sent = codec.decode(frames)
    for part, orig, shape in zip(_parts(sent), _parts(x), SHAPES):
        if len(shape) == 1:
            assert torch.equal(part, orig)  # a vector is sent as it is
        else:
            m = part.reshape(shape[0], -1)
            assert torch.linalg.matrix_rank(m) <= 2


def test_state_survives_a_checkpoint_per_tensor():
    a = make_codec("powersgd:2", error_feedback=True, seed=0, shapes=SHAPES)
    g = torch.Generator().manual_seed(6)
    a.encode(torch.randn(N, generator=g))
    b = make_codec("powersgd:2", error_feedback=True, seed=0, shapes=SHAPES)
    restore_codec(b, codec_state(a))
    x = torch.randn(N, generator=g)
    assert [bytes(f) for f in a.encode(x)] == [bytes(f) for f in b.encode(x)]
    with pytest.raises(ValueError):
        restore_codec(make_codec("powersgd:2", shapes=SHAPES[:2]), codec_state(a.codec))


def _hostile(frames: list) -> list:
    index = bytes(frames[0])
    other = make_codec("stc:0.05+golomb", shapes=[(N,)]).encode(torch.randn(N))
    return [
        [],
        [b"XX" + index[2:], *frames[1:]],  # bad magic
        [index[:2] + b"\x09" + index[3:], *frames[1:]],  # unknown version
        [index[:3] + b"\x05" + index[4:], *frames[1:]],  # five tensors, not six
        [index[:3] + b"\x7f" + index[4:], *frames[1:]],  # more tensors than the model has
        [index + b"\x01", *frames[1:]],  # trailing bytes in the index
        [index[:-1], *frames[1:]],  # truncated index
        frames[:-1],  # a frame missing
        [*frames, b"extra"],  # a frame too many
        [index, *frames[2:], frames[1]],  # tensors out of order: shapes do not match
        [b"PT\x01\x06" + b"\x01" * 6, *(bytes(other[-1]) for _ in range(6))],  # foreign blobs
        [index, *(b"\x00" * len(bytes(f)) for f in frames[1:])],  # zeroed tensor blobs
    ]


def test_hostile_messages_raise_codec_errors_only():
    codec = make_codec("stc:0.05+golomb", seed=0, shapes=SHAPES)
    frames = [bytes(f) for f in codec.encode(torch.randn(N))]
    for bad in _hostile(frames):
        with pytest.raises(CodecError):
            codec.decode(bad)
    rng = np.random.default_rng(0)
    for _ in range(200):  # random bytes behind a valid index
        junk = [frames[0]] + [rng.bytes(int(rng.integers(0, 40))) for _ in frames[1:]]
        with pytest.raises(CodecError):
            codec.decode(junk)


def test_bad_scope_is_a_usage_error():
    from p2pfl.errors import ConfigError

    with pytest.raises(ConfigError, match="tensor or global"):
        make_codec("stc:0.01:layer")
