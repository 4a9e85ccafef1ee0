"""CFD's soft-label frame coders (``--fd-coder``): packed, cabac and cabac:temporal.

Every coder round-trips every frame it may send; the CABAC coders send the smallest
frame they may use; hostile frames are ValueErrors (dropped and counted by the
receiver); and a real CFD run is the same run, in fewer bytes, with temporal contexts.
"""

import numpy as np
import pytest

from p2pfl import run_cluster
from p2pfl.compression.cabac import encode_levels
from p2pfl.strategies.softlabels import (CABAC, CABAC_DELTA, CODERS, PACKED_DELTA, TEMPORAL,
                                         decode_labels, encode_labels, quantise)

M, C = 120, 10


def _labels(bits, seed=0, changed=12):
    """Q_b labels and a successor with ``changed`` rows redrawn."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(C, 0.3), M)
    q = p.copy()
    q[rng.choice(M, changed, replace=False)] = rng.dirichlet(np.full(C, 0.3), changed)
    return quantise(p, bits), quantise(q, bits)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("coder", CODERS)
def test_every_coder_round_trips_full_and_delta_frames(coder, bits):
    a, b = _labels(bits)
    assert np.array_equal(decode_labels(encode_labels(a, bits, None, coder), M, C, bits), a)
    frame = encode_labels(b, bits, a, coder)
    assert np.array_equal(decode_labels(frame, M, C, bits, a), b)


@pytest.mark.parametrize("flag", [CABAC, PACKED_DELTA, CABAC_DELTA, TEMPORAL])
def test_each_frame_kind_decodes(flag):
    """The coders pick frames by size; each kind is checked here on its own."""
    from p2pfl.strategies.softlabels import _delta_frame

    a, b = _labels(2, seed=1)
    frame = {CABAC: bytes([CABAC]) + encode_levels(b.reshape(-1)),
             TEMPORAL: bytes([TEMPORAL]) + encode_levels(b.reshape(-1), a.reshape(-1))}.get(flag)
    frame = frame or _delta_frame(flag, b, a, 2)
    assert np.array_equal(decode_labels(frame, M, C, 2, a), b)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_cabac_coders_send_their_smallest_frame(bits):
    for changed in (0, 3, 40, M):
        a, b = _labels(bits, seed=changed, changed=changed)
        sizes = {c: len(encode_labels(b, bits, a, c)) for c in CODERS}
        full = {c: len(encode_labels(b, bits, None, c)) for c in CODERS}
        assert sizes["cabac:temporal"] <= sizes["cabac"] <= min(sizes["packed"], full["packed"])
        assert full["cabac"] == full["cabac:temporal"] <= full["packed"]


def test_the_configuration_knows_the_same_coders():
    from p2pfl import config

    assert config.FD_CODERS == CODERS


def test_temporal_contexts_pay_on_unchanged_rows():
    """Identical successive labels: the temporal frame is nearly free (no bitmap)."""
    a, _ = _labels(2)
    frame = encode_labels(a, 2, a, "cabac:temporal")
    assert frame[0] == TEMPORAL
    assert len(frame) < 1 + (M + 7) // 8  # shorter than a delta frame's bitmap alone


def _hostile(a):
    L = 3
    over = a.astype(np.int32).copy()
    over[0, 0] = L + 1
    bad_sum = a.astype(np.int32).copy()
    bad_sum[0] = 0
    neg = a.astype(np.int32).copy()
    neg[0, 0] = -1
    ok = encode_levels(a.reshape(-1))
    return {
        "empty": b"",
        "unknown flag": bytes([TEMPORAL + 1]) + ok,
        "level above L": bytes([CABAC]) + encode_levels(over.reshape(-1)),
        "negative level": bytes([CABAC]) + encode_levels(neg.reshape(-1)),
        "row sum": bytes([CABAC]) + encode_levels(bad_sum.reshape(-1)),
        "truncated cabac": bytes([CABAC]) + ok[:2],
        "temporal without reference": bytes([TEMPORAL]) + ok,
        "delta shorter than its bitmap": bytes([CABAC_DELTA, 0xFF]),
        "bitmap promises rows not sent": bytes([CABAC_DELTA]) + b"\xff" * ((M + 7) // 8),
    }


@pytest.mark.parametrize("name", sorted(_hostile(_labels(2)[0])))
def test_hostile_frames_are_value_errors(name):
    a, _ = _labels(2)
    frame = _hostile(a)[name]
    ref = None if name == "temporal without reference" else a
    with pytest.raises(ValueError):
        decode_labels(frame, M, C, 2, ref)


def test_a_cfd_run_is_the_same_run_in_fewer_bytes_with_temporal_contexts(tmp_path):
    """Real processes and sockets: the coders are lossless, so every accuracy is the
    same; temporal contexts send fewer bytes up and down than plain CABAC."""
    runs = {c: run_cluster(topology="ring:4", mode="cfd", rounds=8, fd_coder=c, fd_bits=2,
                           public_size=100, quiet=True, out=str(tmp_path / c.replace(":", "_"))
                           ).summary for c in ("cabac", "cabac:temporal")}
    plain, temporal = runs["cabac"], runs["cabac:temporal"]
    assert temporal["accuracy_mean"] == plain["accuracy_mean"]
    assert temporal["misses_total"] == plain["misses_total"] == 0
    assert temporal["dropped_total"] == 0
    assert (temporal["fd_coder"], temporal["fd_bits"], temporal["fd_delta"]) == (
        "cabac:temporal", 2, True)
    assert temporal["bytes_up_total"] < plain["bytes_up_total"]
    assert temporal["bytes_down_total"] < plain["bytes_down_total"]
