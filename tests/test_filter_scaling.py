"""Filter-wise scaling of sparse STC updates (strategies/filter_scaling.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from p2pfl.strategies.filter_scaling import (apply_scales, filter_layout, fit_scales,
                                             read_scales, scales_frame)

SHAPES = [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (10, 512), (10,)]
N = sum(math.prod(s) for s in SHAPES)


def test_layout_scales_conv_kernels_only():
    assert filter_layout(SHAPES) == [(0, 16, 9), (160, 32, 144)]
    assert filter_layout([(10, 64), (10,)]) == []


def test_a_pure_rescaling_of_filters_is_recovered_from_an_empty_sparse_update():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(N, generator=g)
    layout = filter_layout(SHAPES)
    factors = 1 + 0.05 * (2 * torch.rand(48, generator=g) - 1)
    target = torch.zeros(N)  # u: each filter f of the kernels becomes factor_f * W_f
    at = 0
    for o, f, k in layout:
        w = base[o:o + f * k].reshape(f, k)
        target[o:o + f * k] = ((factors[at:at + f].reshape(f, 1) - 1) * w).reshape(-1)
        at += f
    scales = fit_scales(base, torch.zeros(N), target, layout)
    got = np.concatenate([1 + lv.astype(np.float64) * q for q, lv in scales])
    assert np.abs(got - factors.double().numpy()).max() <= 0.05 / 127 / 2 + 1e-6
    e = apply_scales(base, torch.zeros(N), read_scales(scales_frame(scales), layout), layout)
    assert float((e - target).norm()) < 0.01 * float(target.norm())


def test_scales_bring_the_applied_update_closer_to_the_dense_one():
    g = torch.Generator().manual_seed(1)
    base, u = torch.randn(N, generator=g), 0.1 * torch.randn(N, generator=g)
    sent = torch.where(u.abs() > u.abs().quantile(0.99), u, torch.zeros(N))  # top 1 %
    layout = filter_layout(SHAPES)
    e = apply_scales(base, sent, fit_scales(base, sent, u, layout), layout)
    assert float((e - u).norm()) < float((sent - u).norm())
    assert torch.equal(e[-5130:], sent[-5130:])  # linear layer and its bias: unscaled


@pytest.mark.parametrize("frame", [b"", b"\x00" * 55, b"\x00" * 57,
                                   np.float32(0.5).tobytes() + b"\x00" * 52,
                                   np.float32(np.nan).tobytes() + b"\x00" * 52])
def test_a_bad_scales_frame_is_refused(frame):
    with pytest.raises(ValueError, match="filter scale"):
        read_scales(frame, filter_layout(SHAPES))


def test_a_scales_frame_round_trips():
    layout = filter_layout(SHAPES)
    scales = [(np.float32(0.001), np.arange(16, dtype=np.int8)),
              (np.float32(0.0), np.zeros(32, np.int8))]
    back = read_scales(scales_frame(scales), layout)
    assert len(scales_frame(scales)) == 4 + 16 + 4 + 32
    assert all(q == q2 and np.array_equal(a, b) for (q, a), (q2, b) in zip(scales, back))


def test_server_stc_with_filter_scaling_runs_and_sends_the_scales(tmp_path):
    from p2pfl import run_cluster

    common = dict(mode="stc", nodes=4, rounds=3, dataset="digits", model="cnn", quiet=True,
                  in_process=True)
    plain = run_cluster(out=str(tmp_path / "plain"), **common).summary
    scaled = run_cluster(out=str(tmp_path / "scaled"), filter_scaling="on", **common).summary
    assert scaled["failed_nodes"] == {} and scaled["dropped_total"] == 0
    # 48 one-byte scales and 2 steps (and their frame) per update, 4 workers x 3 rounds;
    # the sparse parts differ a little between the runs (Golomb-coded gaps)
    extra = scaled["bytes_up_total"] - plain["bytes_up_total"]
    assert 12 * 56 - 300 <= extra <= 12 * (56 + 16) + 300
