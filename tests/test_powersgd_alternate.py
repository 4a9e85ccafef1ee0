"""``powersgd:R:alternate``: one PowerSGD factor a message (PowerGossip's half power
iteration), chained like temporal CABAC: exact reconstruction at both ends, half the
bytes, gaps detected and resynchronised, hostile chain fields refused, real runs."""

import numpy as np
import pytest
import torch

from _remote import cluster_summary
from p2pfl.compression import make_codec, uses_temporal, without_temporal
from p2pfl.compression.errors import CodecError
from p2pfl.compression.temporal import TemporalGap
from p2pfl.errors import ConfigError

ROWS, COLS = 40, 60


def _stream(n, seed=0):
    """Slowly changing matrices of rank about 3, as consecutive updates are."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(ROWS, 3, generator=g) @ torch.randn(3, COLS, generator=g)
    return [base + 0.1 * torch.randn(ROWS, COLS, generator=g) for _ in range(n)]


def _size(frames):
    return sum(memoryview(f).nbytes for f in frames)


@pytest.mark.parametrize("tail", ["", "+fp16", "+quant:0.01+cabac", "+bf16+deflate"])
def test_the_receiver_decodes_what_the_sender_reconstructs(tail):
    enc, dec = make_codec("powersgd:2:alternate" + tail, seed=0), make_codec(
        "powersgd:2:alternate" + tail, seed=0)
    sizes = []
    for m in _stream(7):
        frames, recon = enc.encode_with_reconstruction(m)
        assert torch.equal(dec.decode(frames, sender="a"), recon)
        sizes.append(_size(frames))
        assert (m - recon).norm() <= m.norm()  # a projection never adds error
    if tail == "":  # a plain (P, Q) message, then rows·r and cols·r floats in turn
        assert sizes[1] - sizes[2] == sizes[3] - sizes[4] == 4 * 2 * (ROWS - COLS)
        assert sizes[0] - sizes[1] == 4 * 2 * COLS


def test_half_the_bytes_of_plain_powersgd_and_nearly_its_error():
    errs, sizes = {}, {}
    for spec in ("powersgd:2", "powersgd:2:alternate"):
        c = make_codec(spec, seed=0)
        out = [c.encode_with_reconstruction(m) for m in _stream(10)]
        sizes[spec] = sum(_size(f) for f, _ in out[1:])
        errs[spec] = float(np.mean([(m - r).norm() / m.norm()
                                    for m, (_, r) in zip(_stream(10), out)]))
    assert sizes["powersgd:2:alternate"] < 0.55 * sizes["powersgd:2"]
    assert errs["powersgd:2:alternate"] < 1.1 * errs["powersgd:2"]


def test_error_feedback_keeps_what_the_factors_missed():
    shapes = [(ROWS, COLS), (COLS,)]
    c = make_codec("powersgd:2:alternate", error_feedback=True, seed=0, shapes=shapes)
    dec = make_codec("powersgd:2:alternate", seed=0, shapes=shapes)
    total_in = torch.zeros(ROWS * COLS + COLS)
    total_out = torch.zeros_like(total_in)
    for m in _stream(6):
        x = torch.cat([m.reshape(-1), torch.ones(COLS)])
        total_in += x
        total_out += dec.decode(c.encode(x), sender=0)
    # Σ inputs = Σ sent + residual (one residual per tensor, concatenated): the
    # residual is all that is missing
    assert c.residual[ROWS * COLS:].abs().max() == 0  # the bias goes dense
    torch.testing.assert_close(total_in, total_out + c.residual.reshape(-1), rtol=1e-4,
                               atol=1e-4)


def test_a_lost_message_is_a_gap_until_the_sender_restarts():
    enc, dec = make_codec("powersgd:2:alternate", seed=0), make_codec("powersgd:2:alternate")
    ms = _stream(6)
    dec.decode(enc.encode(ms[0]), sender=1)
    enc.encode(ms[1])  # lost
    with pytest.raises(TemporalGap):
        dec.decode(enc.encode(ms[2]), sender=1)
    with pytest.raises(TemporalGap):  # a one-sided message needs its sender's chain
        make_codec("powersgd:2:alternate").decode(enc.encode(ms[3]), sender=None)
    enc.restart()  # asked to resynchronise: a plain message every receiver decodes
    for m in ms[4:]:
        frames, recon = enc.encode_with_reconstruction(m)
        assert torch.equal(dec.decode(frames, sender=1), recon)
    other = make_codec("powersgd:2:alternate")  # chains are per sender
    with pytest.raises(TemporalGap):
        other.decode(enc.encode(ms[0]), sender=2)


def _body_at(frames) -> tuple[bytes, int]:
    """A one-sided blob and the offset of its chain varint: the body is flags, rank,
    chain, the values' kind byte, then the rows·r float32 values."""
    blob = b"".join(bytes(f) for f in frames)
    at = len(blob) - 4 * 2 * ROWS - 2
    assert blob[at - 2:at] == bytes([6, 2])  # flags low rank | chained; rank 2
    return blob, at


@pytest.mark.parametrize("case", ["id 0", "one-sided id 1", "skips ahead", "rank",
                                  "chained, not alternate", "truncated"])
def test_hostile_chain_fields_are_codec_errors(case):
    enc = make_codec("powersgd:2:alternate", seed=0)
    dec = make_codec("powersgd:2:alternate")
    ms = _stream(2)
    dec.decode(enc.encode(ms[0]), sender=1)
    blob, at = _body_at(enc.encode(ms[1]))
    assert blob[at] == 2 * 2 + 1  # message 2, one-sided
    if case == "chained, not alternate":
        dec = make_codec("powersgd:2")
    elif case == "truncated":
        blob = blob[:-5]
    elif case == "rank":
        blob = blob[:at - 1] + b"\x01" + blob[at:]
    else:
        head = {"id 0": 1, "one-sided id 1": 3, "skips ahead": 2 * 5 + 1}[case]
        blob = blob[:at] + bytes([head]) + blob[at + 1:]
    with pytest.raises(CodecError):  # TemporalGap is a CodecError
        dec.decode([blob], sender=1)


def test_specs_and_the_downstream():
    assert uses_temporal("powersgd:2:alternate+fp16")
    assert not uses_temporal("powersgd:2+fp16")
    assert without_temporal("powersgd:2:alternate+quant:0.01+cabac:temporal") == \
        "powersgd:2+quant:0.01+cabac"
    with pytest.raises(ConfigError, match="alternate"):
        make_codec("powersgd:2:sideways")


def _run(tmp_path, name, *flags):
    return cluster_summary(tmp_path / name, "--dataset", "mnist1d", "--model", "cnn",
                           "--rounds", 12, *flags)


def test_gossip_and_server_runs_send_fewer_bytes_and_learn(tmp_path):
    plain = _run(tmp_path, "plain", "--topology", "ring:4", "--compression", "powersgd:2")
    alt = _run(tmp_path, "alt", "--topology", "ring:4", "--compression",
               "powersgd:2:alternate")
    assert alt["bytes_sent_total"] < 0.7 * plain["bytes_sent_total"]
    assert alt["dropped_total"] == 0 and alt["misses_total"] == 0
    assert alt["accuracy_mean"] > 0.2  # 10 classes: above chance after 12 rounds
    runs = {spec: _run(tmp_path, spec.replace(":", "_"), "--mode", "stc", "--nodes", "4",
                       "--compression", spec)
            for spec in ("powersgd:2", "powersgd:2:alternate")}
    server, plain = runs["powersgd:2:alternate"], runs["powersgd:2"]
    assert server["bytes_up_total"] < 0.7 * plain["bytes_up_total"]
    # the automatic downstream drops the chain: plain powersgd:2, the same size a round
    assert abs(server["bytes_down_total"] / plain["bytes_down_total"] - 1) < 0.05
    assert server["dropped_total"] == 0
    assert server["global_accuracy_per_round"][-1][1] > 0.2


def test_the_shared_factor_is_orthonormal_and_survives_degenerate_input():
    """Both ends orthonormalise the decoded factor themselves (``_orth``, exact dot
    products, no LAPACK): orthonormal columns spanning the input, and unit vectors
    in place of columns that vanish, so a zero update does not end the chain."""
    from p2pfl.compression.lowrank import _orth

    a = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    q = _orth(a)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-6)
    coef, *_ = np.linalg.lstsq(q, a, rcond=None)  # a lies in span(q)
    np.testing.assert_allclose(q @ coef, a, atol=1e-5)
    for bad in (np.zeros((50, 3), np.float32), np.repeat(a[:, :1], 3, axis=1)):
        q = _orth(bad)
        np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-6)
    enc, dec = make_codec("powersgd:2:alternate", seed=0), make_codec("powersgd:2:alternate")
    for m in [torch.zeros(ROWS, COLS), *_stream(3)]:  # a zero first update, then data
        frames, recon = enc.encode_with_reconstruction(m)
        assert torch.equal(dec.decode(frames, sender=0), recon)
    assert (recon - m).norm() < 0.9 * m.norm()
