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
    sizes = [memoryview(f).nbytes for f in frames]  # small parts share a frame
    assert all(a >= 1 << 16 or b >= 1 << 16 for a, b in zip(sizes, sizes[1:]))
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
    (blob,) = frames  # small: the index and every tensor's blob in one frame
    lengths = _lengths(blob)
    body = 4 + len(lengths)  # where the blobs start (each length is one varint byte here)
    index, rest = blob[:body], blob[body:]
    other = bytes(make_codec("stc:0.05+golomb", shapes=[(N,)]).encode(torch.randn(N))[0])
    return [
        [],
        [b""],
        [b"XX" + blob[2:]],  # bad magic
        [blob[:2] + b"\x02" + blob[3:]],  # an older version (one frame per tensor)
        [blob[:2] + b"\x09" + blob[3:]],  # unknown version
        [blob[:3] + b"\x05" + blob[4:]],  # five tensors, not six
        [blob[:3] + b"\x7f" + blob[4:]],  # more tensors than the model has
        [blob + b"\x01"],  # a byte more than the lengths declare
        [blob[:-1]],  # a byte less
        [index, rest[:-1]],  # split into frames, a byte short
        [index[:4] + bytes([lengths[0] + 1]) + index[5:], rest],  # lengths off by one
        [index[:4] + bytes([lengths[0] - 1, lengths[1] + 1]) + index[6:], rest],  # shifted cut
        [index[:4] + b"\xff\xff\xff\xff\x0f" + index[5:], rest],  # a huge length
        [index[:4] + b"\x80" * 12, rest],  # a malformed varint
        [b"PT\x03\x01" + bytes([len(other)]) + other],  # a foreign model's message
        [index + b"\x00" * len(rest)],  # zeroed tensor blobs
        [index + b"\xa1" * len(rest)],  # explicit headers that claim nothing
    ]


def _lengths(blob: bytes) -> list:
    assert blob[:3] == b"PT\x03" and blob[3] == len(SHAPES)
    return list(blob[4:4 + len(SHAPES)])


def test_blobs_spanning_frames_decode_as_one():
    codec = make_codec("stc:0.01+golomb", seed=0, shapes=SHAPES)
    x = torch.randn(N)
    (blob,), sent = codec.encode_with_reconstruction(x)
    assert all(n < 128 for n in _lengths(blob))
    for cut in range(4 + len(SHAPES), len(blob)):  # any split behind the index
        out = make_codec("stc:0.01+golomb", shapes=SHAPES).decode([blob[:cut], blob[cut:]])
        assert torch.equal(out, sent)
    big = make_codec("none", shapes=[(20000,), (3,)])  # a 80 KB tensor: a frame of its own
    frames = big.encode(torch.arange(20003.0))
    # index (PT, version, n, lengths: 3 + 1 varint bytes), then each blob: implicit
    # header, flags, value kind, float32 values
    assert [memoryview(f).nbytes for f in frames] == [4 + 3 + 1 + 3, 80000, 3 + 12]
    assert torch.equal(make_codec("none", shapes=[(20000,), (3,)]).decode(frames),
                       torch.arange(20003.0))


def test_hostile_messages_raise_codec_errors_only():
    codec = make_codec("stc:0.01+golomb", seed=0, shapes=SHAPES)
    frames = [bytes(f) for f in codec.encode(torch.randn(N))]
    for bad in _hostile(frames):
        with pytest.raises(CodecError):
            codec.decode(bad)
    index = frames[0][:4 + len(SHAPES)]
    rng = np.random.default_rng(0)
    for _ in range(200):  # random bytes behind a valid index, as long as it declares
        junk = [index, rng.bytes(len(frames[0]) - len(index))]
        with pytest.raises(CodecError):
            codec.decode(junk)


def test_bad_scope_is_a_usage_error():
    from p2pfl.errors import ConfigError

    with pytest.raises(ConfigError, match="tensor or global"):
        make_codec("stc:0.01:layer")
