"""Blobs a hostile peer crafts: each must be refused (a CodecError or ValueError, which
the node counts and drops) before it costs memory or time out of proportion to it."""

from __future__ import annotations

import struct
import time
import types
import zlib

import numpy as np
import pytest
import torch

from p2pfl.algorithms.base import Packet
from p2pfl.compression import CodecError, make_codec
from p2pfl.compression.lowrank import _orth
from p2pfl.compression.wire import Writer, write_header


def test_a_golomb_parameter_other_than_b_star_is_refused():
    """b = 31 for a dense support made the decoder unpack k x 31 remainders into an
    int64 matrix: 248 bytes a position from a deflated message of a few kB."""
    n = 1 << 16
    codec = make_codec("topk:0.5+golomb+deflate", max_numel=n)
    body = Writer()
    body.byte(1)
    body.varint(n)  # sparse, k = n: b* is 0
    body.byte(31)
    body.raw(bytes(31 * n // 8))
    body.section(bytes(n // 8))
    body.byte(0)
    body.raw(bytes(4 * n))
    raw = body.tobytes()
    w = Writer()
    write_header(w, codec.ids, torch.float32, (n,))
    w.varint(len(raw))
    w.raw(zlib.compress(raw, 9))
    with pytest.raises(CodecError, match="is not b\\*=0"):
        codec.decode([w.tobytes()])


def _low_rank_blob(codec, side: int, rank: int) -> bytes:
    w = Writer()
    write_header(w, codec.ids, torch.float32, (side, side))
    w.byte(2)  # low rank
    w.varint(rank)
    w.byte(0x18)  # packed levels, a float32 scale
    w.f32(0.01)
    w.varint(2)
    w.byte(0)  # width 0: every level 1, no bytes
    return w.tobytes()


@pytest.mark.parametrize("spec, rank, words", [
    ("none", 64, "without powersgd"),
    ("stc:0.05+golomb", 64, "without powersgd"),
    ("powersgd:2+quant:0.01", 3, "exceeds the limit 2"),
])
def test_a_low_rank_body_is_refused_outside_powersgd_or_above_its_rank(spec, rank, words):
    """Any codec took a low-rank body of any rank: 20 bytes cost a full-rank product
    (and with powersgd:R:alternate, cubic time in Gram–Schmidt)."""
    codec = make_codec(spec)
    with pytest.raises(CodecError, match=words):
        codec.decode([_low_rank_blob(codec, 128, rank)])


def test_orthonormalising_a_vanished_matrix_is_quadratic_not_cubic():
    """Every column of a zero matrix searched the unit vectors from the first again."""
    t0 = time.perf_counter()
    q = _orth(np.zeros((400, 80), np.float32))
    assert time.perf_counter() - t0 < 1.5  # 1.4 s at 250 x 60 before
    assert np.allclose(q.T @ q, np.eye(80), atol=1e-6)


def _per_tensor(*slots: bytes) -> bytes:
    """A per-tensor message (wire format 3): the index of slot sizes, then the slots."""
    index = Writer()
    index.raw(b"PT")
    index.byte(3)
    index.varint(len(slots))
    for slot in slots:
        index.varint(len(slot))
    return index.tobytes() + b"".join(slots)


def test_a_per_tensor_slot_must_declare_the_expected_shape():
    """An explicit header in a slot was read at any size up to 2**28 entries: a 34-byte
    reply made the coordinator allocate 5 GiB before the shape check refused it."""
    from p2pfl.strategies.upstream import UpDecoder

    dec = UpDecoder("stc:0.01+golomb", [(10, 10), (10,)], False)
    w = Writer()
    write_header(w, dec.codec.codecs[0].ids, torch.float32, (1 << 28,))
    w.byte(0)
    w.byte(0x18)
    w.f32(1.0)
    w.varint(2)
    w.byte(0)
    blob = _per_tensor(w.tobytes(), b"\xa2\x00\x18" + struct.pack("<f", 1.0) + b"\x00\x00")
    with pytest.raises(CodecError, match=r"shape \(268435456,\) where \(10, 10\) is expected"):
        dec.decode(1, Packet("stc:0.01+golomb", [blob], round=1), torch.zeros(110))


def test_an_stc_worker_refuses_a_downlink_that_makes_its_model_nan():
    """Raw float32 NaN in a catch-up's slots (no stc codec emits raw floats) was applied
    without a word, and the worker trained a NaN model."""
    from p2pfl.strategies.stc import STCClient

    class Learner:
        _node_id, shapes, num_params = 0, ((4, 3), (4,)), 16

        def __init__(self):
            self.flat = torch.zeros(16)

        def get_flat(self):
            return self.flat.clone()

        def set_flat(self, x):
            self.flat = x.clone()

    options = types.SimpleNamespace(codec_up="stc:0.1+golomb", codec_down="stc:0.1+golomb",
                                    error_feedback_up=False, filter_scaling=False)
    learn = types.SimpleNamespace(behaviour="honest", seed=0, num_nodes=2, colluders=0)
    client = STCClient(Learner(), options, learn)

    def slot(n):  # implicit header, dense body, raw float32 values
        return b"\xa2\x00\x00" + struct.pack(f"<{n}f", *([float("nan")] * n))

    packet = Packet("stc:0.1+golomb", [_per_tensor(slot(12), slot(4))],
                    meta={"at": 1, "base": 0, "nf": [1]}, round=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        client.apply(1, packet)
    assert torch.equal(client.learner.flat, torch.zeros(16))  # the model it held stays


def test_a_neighbour_may_name_only_a_codec_of_the_run():
    """A peer named any spec, and so set the decoder's cost: an all-zero chained
    ``powersgd:511:alternate`` message of under 1 kB made its receiver orthonormalise
    rank 511 in Python."""
    from p2pfl.algorithms.public import PublicCopies

    own = make_codec("stc:0.1+golomb", shapes=[(8, 8)])
    other = make_codec("powersgd:2+quant:0.01", shapes=[(8, 8)])
    frames = other.encode(torch.randn(64))
    packet = Packet(other.name, frames, round=1, sender=1)
    closed = PublicCopies(torch.zeros(64), [1], own, allowed={own.name})
    with pytest.raises(ValueError, match="is not one of this run's"):
        closed.decode(packet)
    both = PublicCopies(torch.zeros(64), [1], own, allowed={own.name, other.name})
    assert both.decode(packet).tensor.shape == (64,)  # a profile's other codec is taken


@pytest.mark.parametrize("value", [3.0e38, float("nan"), -2.0 ** 65])
def test_an_update_or_full_copy_beyond_the_range_is_refused(value):
    """A finite q of 3e38 was applied: the copy, then the consensus step, overflowed to
    inf, and the node failed a round later encoding its own non-finite model."""
    from p2pfl.algorithms.base import dense_packet
    from p2pfl.algorithms.public import PublicCopies

    codec = make_codec("stc:1.0+golomb", shapes=[(64,)])
    copies = PublicCopies(torch.zeros(64), [1], codec)
    q = torch.full((64,), value)
    if value == value:  # stc refuses to encode NaN itself: send NaN dense
        with pytest.raises(ValueError, match="beyond"):
            copies.decode(Packet(codec.name, codec.encode(q), round=1, sender=1))
    full = dense_packet(q)
    full.meta["full"] = True
    with pytest.raises(ValueError, match="beyond"):
        copies.decode(full)
    ok = torch.full((64,), 2.0 ** 63)
    assert copies.decode(Packet(codec.name, codec.encode(ok), round=1, sender=1)).tensor.max() > 0


def test_fd_float32_soft_labels_must_be_probabilities():
    """Raw float32 soft labels (``--fd-bits 0``) of 3e38 from two workers overflowed the
    ensemble's mean to inf, which went to every worker."""
    from p2pfl.strategies import make_strategy
    from p2pfl.strategies.softlabels import label_packet
    from tests._strategy_ctx import server_ctx

    server = make_strategy("fd", server_ctx("fd", workers=[0, 1], fd_bits=0, fd_delta=False))
    probs = np.full((server.m, server.classes), 1.0 / server.classes, np.float32)
    assert server.decode(0, label_packet(probs, 0)).shape == probs.shape
    with pytest.raises(ValueError, match="must be probabilities"):
        server.decode(0, label_packet(np.full_like(probs, 3.0e38), 0))


def test_fd_float32_soft_labels_outside_the_simplex_are_refused():
    """|p| <= 1 let a liar send −1 at a row's honest class and +1 at another: twice the
    pull a probability row has on the ensemble, which every worker then distilled from as
    targets with negative entries and rows not summing to 1."""
    from p2pfl.strategies import make_strategy
    from p2pfl.strategies.softlabels import label_packet
    from tests._strategy_ctx import server_ctx

    server = make_strategy("fd", server_ctx("fd", workers=[0, 1], fd_bits=0, fd_delta=False))
    m, c = server.m, server.classes
    flipped = np.zeros((m, c), np.float32)
    flipped[:, 0], flipped[:, 1] = -1.0, 1.0  # each row sums to 0
    ones = np.ones((m, c), np.float32)  # entries in [0, 1], each row summing to c
    for labels in (flipped, ones):
        with pytest.raises(ValueError, match="must be probabilities"):
            server.decode(0, label_packet(labels, 0))
    rng = np.random.default_rng(0)
    honest = torch.softmax(torch.from_numpy(rng.standard_normal((m, c), np.float32)) * 30, 1)
    assert server.decode(0, label_packet(honest.numpy(), 0)).shape == (m, c)
