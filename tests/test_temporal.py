"""Temporal CABAC contexts (``cabac:temporal``): rate, bit-exactness, loss, hostile ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2pfl.compression import CodecError, make_codec, wire_size
from p2pfl.compression import cabac
from p2pfl.compression._cabac_pure import decode_pure, encode_pure
from p2pfl.compression.temporal import TemporalGap
from p2pfl.errors import ConfigError
from p2pfl.compression.wire import Writer

N = 10 ** 6


def _top1(x: np.ndarray, step: float) -> np.ndarray:
    k = x.size // 100
    idx = np.argpartition(np.abs(x), x.size - k)[x.size - k:]
    levels = np.zeros(x.size, np.int32)
    levels[idx] = np.round(x[idx] / step)
    return levels


def consecutive_updates(rho: float = 0.93, seed: int = 0):
    """Two top-1 % updates of 10^6 values, x2 = rho x1 + sqrt(1 - rho^2) noise:
    consecutive updates whose supports overlap by about 60 %."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 1e-3, N)
    x2 = rho * x1 + np.sqrt(1 - rho ** 2) * rng.normal(0, 1e-3, N)
    return _top1(x1, 2 ** -10), _top1(x2, 2 ** -10)


def test_second_of_two_overlapping_updates_costs_30_percent_fewer_bits():
    a, b = consecutive_updates()
    overlap = np.count_nonzero((a != 0) & (b != 0)) / np.count_nonzero(b)
    assert 0.55 <= overlap <= 0.65
    plain = cabac.encode_levels(b)
    temporal = cabac.encode_levels(b, reference=a)
    assert len(temporal) <= 0.70 * len(plain)
    assert np.array_equal(cabac.decode_levels(temporal, N, reference=a), b)
    assert np.array_equal(cabac.decode_levels(plain, N), b)


@pytest.mark.parametrize("seed", range(6))
def test_c_and_pure_python_are_bit_exact_with_temporal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    ref = rng.integers(-40, 41, n).astype(np.int32) * (rng.random(n) < 0.2)
    lv = np.where(rng.random(n) < 0.5, ref, rng.integers(-3000, 3001, n) * (rng.random(n) < 0.1))
    lv = lv.astype(np.int32)
    data = bytes(encode_pure(lv.tolist(), ref.tolist()))
    if cabac.HAVE_C:
        assert cabac.encode_levels(lv, reference=ref) == data
    assert decode_pure(data, n, ref.tolist()) == lv.tolist()
    assert np.array_equal(cabac.decode_levels(data, n, reference=ref), lv)
    # the plain stream is unchanged by the new contexts
    assert bytes(encode_pure(lv.tolist())) == cabac.encode_levels(lv)


def test_a_reference_of_another_length_is_refused():
    with pytest.raises(CodecError, match="reference"):
        cabac.encode_levels(np.zeros(10, np.int32), reference=np.zeros(9, np.int32))
    data = cabac.encode_levels(np.ones(10, np.int32), reference=np.ones(10, np.int32))
    with pytest.raises(CodecError, match="reference"):
        cabac.decode_levels(data, 10, reference=np.ones(11, np.int32))


SHAPES = [(200, 50), (50,)]
SPEC = "topk:0.05+quant:0.01+cabac:temporal"


def _stream(steps: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10050, generator=g)
    for _ in range(steps):
        yield x
        x = 0.93 * x + 0.37 * torch.randn(10050, generator=g)


def test_a_stream_decodes_message_by_message_and_costs_less():
    enc, dec = make_codec(SPEC, shapes=SHAPES), make_codec(SPEC, shapes=SHAPES)
    plain = make_codec(SPEC.replace(":temporal", ""), shapes=SHAPES)
    sizes, plain_sizes = [], []
    for x in _stream(5):
        frames, sent = enc.encode_with_reconstruction(x)
        assert torch.equal(dec.decode(frames, sender="a"), sent)
        sizes.append(wire_size(frames))
        plain_sizes.append(wire_size(plain.encode(x)))
    assert sizes[0] <= plain_sizes[0] + 2 * 4  # the first message: plain contexts, two ids
    assert sum(sizes[1:]) < 0.9 * sum(plain_sizes[1:])


def test_a_lost_message_is_a_gap_until_the_sender_restarts_its_chain():
    enc, dec = make_codec(SPEC, shapes=SHAPES), make_codec(SPEC, shapes=SHAPES)
    xs = list(_stream(5))
    dec.decode(enc.encode(xs[0]), sender=7)
    enc.encode(xs[1])  # lost on the way
    with pytest.raises(TemporalGap):
        dec.decode(enc.encode(xs[2]), sender=7)
    with pytest.raises(TemporalGap):  # still missing: each message refers to the last
        dec.decode(enc.encode(xs[3]), sender=7)
    enc.restart()  # the receiver asked for a resynchronisation
    frames, sent = enc.encode_with_reconstruction(xs[4])
    assert torch.equal(dec.decode(frames, sender=7), sent)
    # another sender's stream, and a decoder that does not know the sender, are apart
    with pytest.raises(TemporalGap):
        dec.decode(enc.encode(xs[0]), sender=8)
    with pytest.raises(TemporalGap):
        dec.decode(enc.encode(xs[0]))


def _section(head: int, body: bytes = b"") -> bytes:
    w = Writer()
    w.varint(head)  # 2 * own id + (coded against own id - 1)
    w.raw(body)
    return w.tobytes()


@pytest.mark.parametrize("head", [0, 1, 3, 1 << 63])
def test_hostile_ids_are_codec_errors(head):
    stage = make_codec("quant:0.1+cabac:temporal").cabac
    body = cabac.encode_levels(np.ones(4, np.int32))
    with pytest.raises(CodecError):
        stage.decode_levels(_section(head, body), 4, sender=1)
    assert np.array_equal(stage.decode_levels(_section(2, body), 4, sender=1), np.ones(4))


def test_temporal_is_never_longer_than_plain_beyond_its_id():
    enc = make_codec("quant:0.01+cabac:temporal")
    plain = make_codec("quant:0.01+cabac")
    g = torch.Generator().manual_seed(9)
    for _ in range(5):  # independent messages: the temporal contexts cannot help
        x = torch.randn(5000, generator=g)
        assert wire_size(enc.encode(x)) <= wire_size(plain.encode(x)) + 2


def test_hostile_sections_never_raise_anything_but_codec_errors():
    codec = make_codec("quant:0.1+cabac:temporal")
    rng = np.random.default_rng(3)
    x = torch.randn(300)
    good = [bytes(f) for f in codec.encode(x)]
    blob = b"".join(good)
    for _ in range(300):
        bad = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
        try:
            codec.decode([bytes(bad[:int(rng.integers(0, len(bad) + 1))])], sender=2)
        except CodecError:
            pass


@pytest.mark.parametrize("spec, message", [
    ("stc:0.01+golomb+cabac:temporal", "codes the support itself"),
    ("quant:0.1+cabac:past", "temporal"),
])
def test_bad_temporal_specs_are_usage_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_codec(spec)


def _gossip(tmp_path, name, codec, *flags):
    from tests._remote import cluster_summary

    return cluster_summary(tmp_path / name, "--topology", "ring:6", "--rounds", "25",
                           "--compression", codec, *flags)


def test_gossip_with_temporal_contexts_is_lossless_and_survives_loss(tmp_path):
    spec = "topk:0.05+quant:0.002+cabac"
    plain = _gossip(tmp_path, "plain", spec)
    temporal = _gossip(tmp_path, "temporal", spec + ":temporal")
    # the same levels reach every node: the runs learn identically.  CHOCO's consecutive
    # q messages barely share their support, so temporal contexts do not save bytes here
    # (BENCHMARKS.md); their ids and diluted contexts cost a few per cent at most
    assert temporal["accuracy_per_round"] == plain["accuracy_per_round"]
    assert temporal["bytes_sent_total"] < 1.10 * plain["bytes_sent_total"]
    assert temporal["dropped"].get("temporal_gap", 0) == 0  # loopback loses nothing
    # 5 % of messages lost: receivers miss references, ask to resync, and go on.  How
    # many later messages arrive before the resync (each a temporal_gap drop) depends on
    # timing, and can be none (a CI run); the gap itself is tested message by message
    # above (test_a_lost_message_is_a_gap_until_the_sender_restarts_its_chain)
    lossy = _gossip(tmp_path, "lossy", spec + ":temporal", "--link", "loss=0.05",
                    "--round-timeout", "1")  # each loss costs a time-out: 30 s at 10 s
    assert lossy["emulated_lost_total"] > 0 and lossy["misses_total"] > 0
    assert lossy["dropped"].get("undecodable", 0) == 0
    assert lossy["accuracy_mean"] > 0.8
