"""Filter-wise scaling of sparse STC updates (strategies/filter_scaling.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from p2pfl.strategies.filter_scaling import (STEP, apply_scales, filter_layout, fit_scales,
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
    factors = 1 + STEP * torch.randint(-60, 61, (48,), generator=g).float()
    target = torch.zeros(N)  # u: each filter f of the kernels becomes factor_f * W_f
    at = 0
    for o, f, k in layout:
        w = base[o:o + f * k].reshape(f, k)
        target[o:o + f * k] = ((factors[at:at + f].reshape(f, 1) - 1) * w).reshape(-1)
        at += f
    levels = fit_scales(base, torch.zeros(N), target, layout)
    assert np.array_equal(1 + levels.astype(np.float64) * STEP, factors.double().numpy())
    e = apply_scales(base, torch.zeros(N), levels, layout)
    torch.testing.assert_close(e, target, atol=1e-5, rtol=1e-5)


def test_scales_bring_the_applied_update_closer_to_the_dense_one():
    g = torch.Generator().manual_seed(1)
    base, u = torch.randn(N, generator=g), 0.1 * torch.randn(N, generator=g)
    sent = torch.where(u.abs() > u.abs().quantile(0.99), u, torch.zeros(N))  # top 1 %
    layout = filter_layout(SHAPES)
    e = apply_scales(base, sent, fit_scales(base, sent, u, layout), layout)
    assert float((e - u).norm()) < float((sent - u).norm())
    assert torch.equal(e[-5130:], sent[-5130:])  # linear layer and its bias: unscaled


@pytest.mark.parametrize("size", [0, 47, 49])
def test_a_scales_frame_of_the_wrong_size_is_refused(size):
    with pytest.raises(ValueError, match="filter scales"):
        read_scales(b"\x01" * size, filter_layout(SHAPES))
    assert len(read_scales(scales_frame(np.ones(48, np.int8)), filter_layout(SHAPES))) == 48


def test_server_stc_with_filter_scaling_runs_and_sends_the_scales(tmp_path):
    from p2pfl import run_cluster

    common = dict(mode="stc", nodes=4, rounds=3, dataset="digits", model="cnn", quiet=True,
                  in_process=True)
    plain = run_cluster(out=str(tmp_path / "plain"), **common).summary
    scaled = run_cluster(out=str(tmp_path / "scaled"), filter_scaling="on", **common).summary
    assert scaled["failed_nodes"] == {} and scaled["dropped_total"] == 0
    # 48 one-byte scales (and their frame) per update, 4 workers x 3 rounds; the sparse
    # parts differ a little between the runs (Golomb-coded gaps of other supports)
    extra = scaled["bytes_up_total"] - plain["bytes_up_total"]
    assert 12 * 48 - 300 <= extra <= 12 * (48 + 16) + 300
