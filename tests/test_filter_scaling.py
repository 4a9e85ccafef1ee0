"""Filter-wise scaling of sparse updates in server STC and FedAvg
(strategies/filter_scaling.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from p2pfl.strategies.filter_scaling import (apply_scales, combine_scales, filter_layout,
                                             quantise_scales, read_scales, scale_filters,
                                             scaled_parameters, scales_frame)

SHAPES = [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (10, 512), (10,)]
N = sum(math.prod(s) for s in SHAPES)


def test_layout_scales_conv_kernels_only():
    assert filter_layout(SHAPES) == [(0, 16, 9), (160, 32, 144)]
    assert scaled_parameters(SHAPES) == [0, 2]
    assert filter_layout([(10, 64), (10,)]) == [] and scaled_parameters([(10, 64)]) == []


def test_quantised_scales_are_within_half_a_step_and_round_trip():
    g = torch.Generator().manual_seed(0)
    scales = [1 + 0.03 * (2 * torch.rand(16, generator=g) - 1), torch.ones(32)]
    scales[1][5] = 0.98
    scales.append(1 + 0.01 * torch.randn(7, generator=g))  # an odd number of filters
    q = quantise_scales(scales)
    for s, (step, levels) in zip(scales, q):
        assert np.abs(levels).max() <= 7
        got = 1 + levels.astype(np.float64) * float(step)
        assert np.abs(got - s.double().numpy()).max() <= float(step) / 2 + 1e-6
    layout = [(0, 16, 1), (16, 32, 1), (48, 7, 1)]
    frame = scales_frame(q)
    assert len(frame) == (2 + 8) + (2 + 16) + (2 + 4)
    back = read_scales(frame, layout)
    assert all(q1 == q2 and np.array_equal(a, b) for (q1, a), (q2, b) in zip(q, back))


def test_non_finite_scales_leave_the_layer_unscaled():
    (step, levels), = quantise_scales([torch.tensor([1.0, float("nan"), 1.2])])
    assert step == 0 and not levels.any()


def test_scales_move_whole_filters_and_leave_the_rest():
    g = torch.Generator().manual_seed(1)
    base, sent = torch.randn(N, generator=g), torch.zeros(N)
    layout = filter_layout(SHAPES)
    scales = [(np.float16(0.01), np.full(16, 7, np.int8)), (np.float16(0), np.zeros(32, np.int8))]
    e = apply_scales(base, sent, scales, layout)
    torch.testing.assert_close(e[:144], (float(np.float16(0.01)) * 7) * base[:144])
    assert not e[144:].any()  # the second layer's scales are 1; linear layer unscaled


def test_global_scales_are_the_weighted_mean_or_the_median_and_move_whole_filters():
    layout = [(0, 3, 2)]
    mk = lambda lv: [(np.float16(0.01), np.array(lv, np.int8))]  # noqa: E731
    received = [mk([7, 0, -7]), mk([1, 0, 7]), mk([1, 0, 7])]
    (q, levels), = combine_scales(received, [10, 30, 0], False, layout)
    mean = 1 + float(np.float16(0.01)) * np.array([(70 + 30) / 40, 0, (-70 + 210) / 40])
    assert np.abs(1 + levels * float(q) - mean).max() <= float(q) / 2 + 1e-6
    (q, levels), = combine_scales(received, [1, 1, 1], True, layout)  # robust: the median
    assert np.allclose(1 + levels * float(q), 1 + float(np.float16(0.01)) * np.array([1, 0, 7]),
                       atol=float(q) / 2 + 1e-6)
    assert all(not lv.any() for _, lv in combine_scales([], [], False, layout))  # no reply: 1
    v = torch.arange(1.0, 9.0)
    out = scale_filters(v, [(np.float16(0.5 / 7), np.array([7, 0, -7], np.int8))], layout)
    s = float(np.float16(0.5 / 7)) * 7
    torch.testing.assert_close(out, torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]) * torch.tensor(
        [1 + s, 1 + s, 1, 1, 1 - s, 1 - s, 1, 1]))
    assert torch.equal(v, torch.arange(1.0, 9.0))  # a new tensor


def test_stc_sends_the_global_scales_down_and_its_workers_follow_bit_for_bit():
    """W ← s̄ ⊙ (W + ΔW̃) on the server, and the same from the catch-up blobs on a worker."""
    import dataclasses

    from _strategy_ctx import FakeLearner, server_ctx
    from _strategy_ctx import client as make_client
    from p2pfl.compression import make_codec
    from p2pfl.strategies import Reply, make_strategy
    from p2pfl.strategies.base import Packet
    from p2pfl.strategies.stc import read_catch_up

    g = torch.Generator().manual_seed(3)
    init = torch.randn(N, generator=g)
    ctx = dataclasses.replace(server_ctx("stc", n=N, stc_cache=10, filter_scaling="on"),
                              shapes=tuple(SHAPES), init=init)
    server = make_strategy("stc", ctx)
    learner = FakeLearner(N)
    learner.shapes, learner.flat = SHAPES, init.clone()
    worker = make_client("stc", learner, filter_scaling="on")
    up = make_codec(server.up_spec, shapes=SHAPES)
    layout = filter_layout(SHAPES)
    before = server.model.clone()
    for rnd in (1, 2, 3):
        server.configure(rnd, [1, 2])
        replies = []
        for w, level in ((1, 7), (2, -3)):
            scales = [(np.float16(0.01), np.full(f, level, np.int8)) for _, f, _ in layout]
            packet = Packet(up.name, [*up.encode(0.01 * torch.randn(N, generator=g)),
                                      scales_frame(scales)],
                            meta={"n": 10, "fs": True, "at": rnd - 1})
            replies.append(Reply(w, content=server.decode(w, packet), num_samples=10 * w))
        server.aggregate(rnd, replies)
    packet = server.configure(4, [0])[0]
    assert [len(b) for b in read_catch_up(packet)] == [len(up.encode(torch.zeros(N))) + 1] * 3
    worker.apply(4, packet)
    assert torch.equal(worker.base, server.model)
    # s̄ − 1 = 0.01 · (10·7 − 20·3) / 30 > 0: every filter grew, beyond what 5 % sparse moves
    ratio = server.model[:144] / before[:144]
    assert (ratio > 1).float().mean() > 0.9
    # a global update whose scales frame is bad is refused whole: the model is untouched
    blobs = read_catch_up(packet)
    blobs[-1] = [*blobs[-1][:-1], b"\x00" * 3]
    bad = Packet(packet.codec, [f for b in blobs for f in b], meta=dict(packet.meta))
    fresh_learner = FakeLearner(N)  # a worker that still needs them (ours skips rounds held)
    fresh_learner.shapes, fresh_learner.flat = SHAPES, init.clone()
    fresh = make_client("stc", fresh_learner, filter_scaling="on")
    with pytest.raises(ValueError, match="filter scales"):
        fresh.apply(5, bad)
    assert torch.equal(fresh.base, init) and fresh.at == 0


@pytest.mark.parametrize("frame", [b"", b"\x00" * 27, b"\x00" * 29,
                                   np.float16(0.5).tobytes() + b"\x00" * 26,
                                   np.float16(np.nan).tobytes() + b"\x00" * 26,
                                   b"\x00\x00" + b"\x08" + b"\x00" * 25])
def test_a_bad_scales_frame_is_refused(frame):
    with pytest.raises(ValueError, match="filter scale"):
        read_scales(frame, filter_layout(SHAPES))


def test_trained_scales_lower_the_loss_and_leave_the_weights_frozen():
    from p2pfl.learner import Learner
    from _strategy_ctx import config, learn_spec

    learn = learn_spec(config("stc", model="cnn", local_steps=20, lr=0.05))
    learner = Learner(learn, 0)
    learner.train()  # a model worth scaling
    flat = learner.get_flat()
    which = scaled_parameters(learner.shapes)
    t = learner.trainer

    def loss():
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(learner.model(t.x), t.y))

    before = loss()
    scales = learner.train_scales(which, 30, 0.05)
    assert torch.equal(learner.get_flat(), flat)  # weights frozen
    assert [s.numel() for s in scales] == [learner.shapes[i][0] for i in which]
    scaled = flat.clone()
    for (o, f, k), s in zip(filter_layout(learner.shapes), scales):
        scaled[o:o + f * k] = (s.reshape(f, 1) * flat[o:o + f * k].reshape(f, k)).reshape(-1)
    learner.set_flat(scaled)
    assert loss() < before


@pytest.mark.parametrize("mode, codec", [("stc", "none"), ("fedavg", "topk:0.01+golomb")])
def test_server_modes_with_filter_scaling_run_and_send_the_scales(tmp_path, mode, codec):
    from p2pfl import run_cluster

    common = dict(mode=mode, compression=codec, nodes=4, rounds=3, dataset="digits",
                  model="cnn", quiet=True, in_process=True)
    plain = run_cluster(out=str(tmp_path / "plain"), **common).summary
    scaled = run_cluster(out=str(tmp_path / "scaled"), filter_scaling="on", **common).summary
    assert scaled["failed_nodes"] == {} and scaled["dropped_total"] == 0
    # 48 four-bit scales and 2 float16 steps (28 bytes, and their frame) per update,
    # 4 workers x 3 rounds; the sparse parts differ a little between the runs (Golomb gaps)
    extra = scaled["bytes_up_total"] - plain["bytes_up_total"]
    assert 12 * 28 - 300 <= extra <= 12 * (28 + 16) + 300
    down = scaled["bytes_down_total"] - plain["bytes_down_total"]
    if mode == "stc":  # s̄ goes down with each of the 3 global updates, to each worker
        assert 12 * 28 - 300 <= down <= 12 * (28 + 16) + 300
    else:  # FedAvg sends the model, which holds the scaled filters
        assert down == 0
