"""The one-pass gossip mix (``p2pfl/algorithms/_kernel.c``) against torch.

The C path rounds each product and then each sum, left to right, so it agrees bit
for bit with torch doing just that; it takes only float32 CPU tensors and hands the
rest to torch, whose ``add_(alpha=)`` may fuse a rounding away (the last bit).
"""

import os
import subprocess
import sys

import pytest
import torch

from p2pfl.algorithms import kernel
from p2pfl.algorithms.dpsgd import DPSGD

needs_c = pytest.mark.skipif(not kernel.HAVE_C, reason="the C mix kernel is not built "
                             "(no compiler at install)")


def _torch_sum(x, w_self, vectors, weights):
    out = x * w_self
    for v, w in zip(vectors, weights):
        out = out + v * w
    return out


@needs_c
@pytest.mark.parametrize("n", [1, 7, 2047, 2048, 2049, 100_003])
@pytest.mark.parametrize("k", [0, 1, 2, 3, 6])
def test_c_mix_equals_torch_bit_for_bit(n, k):
    g = torch.Generator().manual_seed(n * 10 + k)
    x = torch.randn(n, generator=g)
    vectors = [torch.randn(n, generator=g) * 10 ** j for j in range(k)]
    weights = [0.1 * (j + 1) + 0.0123 for j in range(k)]
    got = kernel.weighted_sum(x, 0.337, vectors, weights)
    assert torch.equal(got, _torch_sum(x, 0.337, vectors, weights))
    assert got.data_ptr() != x.data_ptr()  # a new tensor: x is untouched


@needs_c
def test_non_finite_values_propagate():
    x = torch.ones(5000)
    v = torch.ones(5000)
    v[4321] = float("nan")
    out = kernel.weighted_sum(x, 0.5, [v, torch.full((5000,), float("inf"))], [0.25, 0.25])
    assert torch.isnan(out[4321]) and torch.isinf(out[0])


@pytest.mark.parametrize("c_path", [True, False], ids=["C", "torch"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "inf at weight 0", "overflow", "none"])
@pytest.mark.parametrize("at", [0, 2047, 2048, 4999])
def test_the_checked_sum_says_whether_the_result_is_finite(bad, at, c_path, monkeypatch):
    """Any NaN or infinity in any input, in any block, or a sum that overflows, makes
    the result non-finite, and the check says so; finite inputs say True."""
    if c_path and not kernel.HAVE_C:
        pytest.skip("the C mix kernel is not built (no compiler at install)")
    if not c_path:
        monkeypatch.setattr(kernel, "_c", None)
    x, v, u = torch.ones(5000), torch.full((5000,), 2.0), torch.full((5000,), -1e-40)
    weights = [0.25, 0.25]
    if bad == "overflow":
        x[at], v[at] = 3e38, 3e38
        weights = [1.0, 1.0]
    elif bad != "none":
        v[at] = float(bad.split()[0])
        weights = [0.0, 0.25] if "weight 0" in bad else weights
    out, finite = kernel.weighted_sum_checked(x, 1.0 if bad == "overflow" else 0.5, [v, u],
                                              weights)
    assert finite == (bad == "none") == bool(torch.isfinite(out).all())


@pytest.mark.parametrize("case", ["float64", "strided", "shape", "no extension"])
def test_tensors_the_kernel_does_not_take_go_to_torch(case, monkeypatch):
    x = torch.randn(64, dtype=torch.float64 if case == "float64" else torch.float32)
    v = torch.randn(128)[::2] if case == "strided" else torch.randn(64, dtype=x.dtype)
    if case == "shape":
        x, v = x.view(8, 8), v[:8]  # broadcasts in torch: not the kernel's business
    summed = []  # calls in which the C function computed a sum
    if kernel.HAVE_C and case == "no extension":
        monkeypatch.setattr(kernel, "_c", None)
    elif kernel.HAVE_C:  # the C function may see these buffers, but must refuse them
        real = kernel._c.weighted_sum

        def spy(*args):
            real(*args)
            summed.append(args)

        monkeypatch.setattr(kernel._c, "weighted_sum", spy)
    got = kernel.weighted_sum(x, 0.5, [v], [0.5])
    torch.testing.assert_close(got, _torch_sum(x, 0.5, [v], [0.5]))
    assert not summed


@needs_c
def test_more_neighbours_than_one_call_takes_are_summed_in_chunks():
    """A hub of a star or a node of a large complete graph: 300 neighbours, the same
    bits as one left-to-right sum (the partial sum is carried with weight 1)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1000, generator=g)
    vectors = [torch.randn(1000, generator=g) for _ in range(300)]
    weights = [1 / 301] * 300
    assert torch.equal(kernel.weighted_sum(x, 1 / 301, vectors, weights),
                       _torch_sum(x, 1 / 301, vectors, weights))


def test_mismatched_vectors_and_weights_are_refused():
    with pytest.raises(ValueError):
        kernel.weighted_sum(torch.ones(4), 1.0, [torch.ones(4)], [])


@needs_c
def test_the_c_module_refuses_bad_buffers():
    c = kernel._c
    f32, f64 = torch.zeros(8).numpy(), torch.zeros(8, dtype=torch.float64).numpy()
    with pytest.raises(TypeError):
        c.weighted_sum(f32, f64, 1.0, (), ())
    with pytest.raises(ValueError):
        c.weighted_sum(f32, f32, 1.0, (torch.zeros(9).numpy(),), (1.0,))
    with pytest.raises(TypeError):
        c.weighted_sum(f32, f32, 1.0, (f32,), ())
    with pytest.raises(TypeError):
        c.weighted_sum(f32, f32, 1.0, (f32,), ("x",))
    with pytest.raises(BufferError):  # read-only output
        c.weighted_sum(bytes(32), f32, 1.0, (), ())
    import numpy as np

    swapped = np.zeros(8, dtype=">f4" if sys.byteorder == "little" else "<f4")
    with pytest.raises(TypeError):  # the other byte order would be read as garbage
        c.weighted_sum(f32, swapped, 1.0, (), ())


def test_the_mix_agrees_with_and_without_the_extension():
    """A node built without a compiler (here P2PFL_KERNEL_PURE=1, in a fresh
    interpreter) mixes to the same values, up to the last bit."""
    code = ("import torch, sys; from p2pfl.algorithms import kernel; "
            "g = torch.Generator().manual_seed(1); x = torch.randn(30000, generator=g); "
            "vs = [torch.randn(30000, generator=g) for _ in range(3)]; "
            "out = kernel.weighted_sum(x, 0.25, vs, [0.25, 0.3, 0.2]); "
            "sys.stdout.write(str(kernel.HAVE_C) + ' ' + ' '.join(map(repr, out.tolist())))")
    runs = {}
    for pure in ("0", "1"):
        env = dict(os.environ, P2PFL_KERNEL_PURE=pure)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True)
        have, values = res.stdout.split(" ", 1)
        assert have == str(kernel.HAVE_C and pure == "0")
        runs[pure] = torch.tensor([float(v) for v in values.split()])
    torch.testing.assert_close(runs["0"], runs["1"], rtol=1e-6, atol=1e-6)


def test_dpsgd_mix_uses_the_renormalised_weights():
    algo = DPSGD.__new__(DPSGD)
    algo.self_weight, algo.weights, algo.robust = 0.5, {1: 0.25, 2: 0.25}, ("none",)
    x, a = torch.zeros(4), torch.ones(4)
    out = algo.mix(x, {1: a})  # neighbour 2 missing: its share goes to x
    assert torch.allclose(out, torch.full((4,), 0.25))
    out = algo.mix(x, {1: a}, to_self=False)  # asynchronous: spread in proportion
    assert torch.allclose(out, torch.full((4,), 1 / 3))
