"""Gossip algorithms as pure update rules: D-PSGD, compressed D-PSGD, CHOCO, resynchronisation."""

import numpy as np
import pytest
import torch

from p2pfl.algorithms import CHOCO, DPSGD, CompressedDPSGD, make_algorithm
from p2pfl.algorithms.base import renormalised
from p2pfl.algorithms.consensus import run_consensus
from p2pfl.algorithms.options import CHOCOOptions, DPSGDOptions
from p2pfl.topology import build

torch.manual_seed(0)


def _opts(algorithm, codec, gamma=0.5, memory="on"):
    if algorithm == "choco":
        return CHOCOOptions(codec=codec, gamma=gamma, error_feedback=memory == "on")
    return DPSGDOptions(codec=codec, error_feedback=memory == "on")


def _ring(n):
    return np.array(build(f"ring:{n}").weights)


def test_renormalised_rows_still_sum_to_one():
    w_self, w = renormalised(0.4, {1: 0.3, 2: 0.3}, [1])  # synchronous: to the diagonal
    assert w_self + sum(w.values()) == pytest.approx(1.0)
    assert (w_self, w) == (pytest.approx(0.7), {1: 0.3})
    w_self, w = renormalised(0.4, {1: 0.3, 2: 0.3}, [1], to_self=False)  # in proportion
    assert w_self + sum(w.values()) == pytest.approx(1.0)
    assert w_self == pytest.approx(0.4 / 0.7)


def test_a_link_down_both_ways_keeps_the_networks_average():
    """Ring of 4, link 0–1 lost both ways: the missing weights go to the diagonal, so
    the mixing matrix stays doubly stochastic and the mean of the models is kept
    (spreading them over the other neighbours moved it by 0.24)."""
    W = _ring(4)
    X = torch.randn(4, 30, generator=torch.Generator().manual_seed(5))
    algs = [DPSGD(30, W[i, i], {j: W[i, j] for j in np.flatnonzero(W[i]) if j != i})
            for i in range(4)]
    out = torch.stack([a.mix(X[i].clone(), {j: X[j] for j in a.weights if {i, j} != {0, 1}})
                       for i, a in enumerate(algs)])
    torch.testing.assert_close(out.mean(0), X.mean(0), atol=1e-6, rtol=0)


def test_dpsgd_mix_is_the_weighted_average():
    alg = DPSGD(3, 0.5, {1: 0.25, 2: 0.25})
    x = torch.tensor([1.0, 2.0, 3.0])
    pkt = alg.outgoing(torch.tensor([3.0, 2.0, 1.0]))
    got = alg.mix(x.clone(), {1: alg.decode(pkt), 2: torch.zeros(3)})
    torch.testing.assert_close(got, 0.5 * x + 0.25 * torch.tensor([3.0, 2.0, 1.0]))


@pytest.mark.parametrize("robust", ["none", "clip:1.0"])
def test_dpsgd_leaves_out_a_non_finite_model_and_says_whose(robust):
    """The screening rides on the mix: the neighbour whose model holds a NaN is left
    out, the row re-normalised over the rest, and the sender reported once."""
    alg = DPSGD(4, 0.5, {1: 0.25, 2: 0.25}, options=DPSGDOptions(robust=robust))
    x, good = torch.ones(4), torch.full((4,), 3.0)
    bad = alg.decode(alg.outgoing(torch.tensor([1.0, float("nan"), 1.0, 1.0])))
    got = alg.mix(x.clone(), {1: good, 2: bad})
    assert alg.take_rejected() == [2] and alg.take_rejected() == []
    torch.testing.assert_close(got, alg.mix(x.clone(), {1: good}))
    assert bool(torch.isfinite(got).all()) and alg.take_rejected() == []


@pytest.mark.parametrize("observe", [False, True])
def test_dpsgd_keeps_the_neighbours_models_only_for_an_observer(observe):
    """An ALIE attacker sees the models it mixed; anyone else frees them after the mix."""
    alg = DPSGD(2, 0.5, {1: 0.5})
    alg.observe_neighbours = observe
    theirs = torch.ones(2)
    alg.mix(torch.zeros(2), {1: theirs})
    assert alg.neighbour_models() == ([theirs] if observe else [])


def test_dpsgd_keeps_its_own_non_finite_model_and_blames_no_neighbour():
    alg = DPSGD(3, 0.5, {1: 0.5})
    got = alg.mix(torch.tensor([float("inf"), 0.0, 0.0]), {1: torch.ones(3)})
    assert alg.take_rejected() == [] and torch.isinf(got[0])


def test_dpsgd_async_a_bad_latest_model_does_not_hide_an_earlier_good_one():
    alg = DPSGD(2, 0.5, {1: 0.5})
    nan = torch.tensor([float("nan"), 0.0])
    got = alg.mix_async(torch.zeros(2), {1: [torch.ones(2), nan]})
    assert alg.take_rejected() == [1]
    torch.testing.assert_close(got, torch.full((2,), 0.5))


def test_make_algorithm_picks_the_compressed_variant():
    x0 = torch.zeros(10)
    got = make_algorithm("dpsgd", 10, 0.5, {1: 0.5}, x0=x0, options=_opts("dpsgd", "topk:0.2"))
    assert isinstance(got, CompressedDPSGD)
    got = make_algorithm("choco", 10, 0.5, {1: 0.5}, x0=x0, options=_opts("choco", "topk:0.2"))
    assert isinstance(got, CHOCO)
    got = make_algorithm("dpsgd", 10, 0.5, {1: 0.5}, x0=x0, options=_opts("dpsgd", "none"))
    assert isinstance(got, DPSGD) and not isinstance(got, CompressedDPSGD)


def test_choco_gossip_reaches_consensus_and_keeps_the_mean():
    X0 = torch.randn(9, 200)
    res = run_consensus(_ring(9), X0, compression="topk:0.1", gamma=0.3, iterations=3000,
                        target=1e-4, every=10)
    assert res["reached"] is not None and res["reached"] < 3000
    assert res["errors"][-1][1] <= 1e-4


def test_choco_preserves_the_network_mean():
    W = _ring(6)
    X = torch.randn(6, 50)
    nodes = [make_algorithm("choco", 50, W[i, i], {j: W[i, j] for j in np.flatnonzero(W[i])
                                                   if j != i},
                            x0=torch.zeros(50), options=_opts("choco", "stc:0.1", 0.4))
             for i in range(6)]
    mean0 = X.mean(0)
    for it in range(1, 30):
        pk = [a.outgoing(X[i].clone()) for i, a in enumerate(nodes)]
        for p in pk:
            p.round = it
        X = torch.stack([a.mix(X[i].clone(), {j: a.decode(pk[j]) for j in a.weights})
                         for i, a in enumerate(nodes)])
    torch.testing.assert_close(X.mean(0), mean0, atol=1e-5, rtol=0)


def _pair(algorithm, spec="topk:0.3"):
    options = _opts(algorithm, spec)
    x0 = torch.randn(40)
    a = make_algorithm(algorithm, 40, 0.5, {1: 0.5}, x0=x0, options=options)
    b = make_algorithm(algorithm, 40, 0.5, {0: 0.5}, x0=x0, options=options)
    return a, b


@pytest.mark.parametrize("algorithm", ["choco", "dpsgd"])
def test_a_lost_update_is_detected_and_resynchronised(algorithm):
    a, b = _pair(algorithm)
    xa, xb = torch.randn(40), torch.randn(40)
    for rnd in range(1, 8):
        pa, pb = a.outgoing(xa.clone()), b.outgoing(xb.clone())
        pa.round = pb.round = rnd
        if rnd == 3:  # a's round-3 update never reaches b
            xb = b.mix(xb.clone(), {})
        else:
            special = a.full_copies()
            pa = special.get(1, pa)
            pa.round = rnd
            xb = b.mix(xb.clone(), {0: b.decode(pa)})
        xa = a.mix(xa.clone(), {1: a.decode(pb)})
        for j in b.resync_requests(rnd):
            a.on_resync_request(1)
        if rnd == 3:
            assert 0 in b.public.stale
    # after the full copy arrived, b's copy of a equals a's own public copy exactly
    assert not b.public.stale
    torch.testing.assert_close(b.public.copies[0], a.public.own, atol=0, rtol=0)


def _top4(v):
    """topk:0.1 of 40 entries: the 4 largest magnitudes kept, the rest zero."""
    out = torch.zeros_like(v)
    idx = v.abs().topk(4).indices
    out[idx] = v[idx]
    return out


@pytest.mark.parametrize("memory", ["on", "off"])
def test_error_feedback_keeps_what_compression_drops(memory):
    """Compressed D-PSGD (CHOCO at γ = 1), w = 1/2 each: x ← base + ½ (x̂_1 − x̂_0),
    base = x with the memory (the residual x − x̂_0 stays), x̂_0 without it."""
    x0 = torch.zeros(40)
    options = _opts("dpsgd", "topk:0.1", memory=memory)
    a = make_algorithm("dpsgd", 40, 0.5, {1: 0.5}, x0=x0, options=options)
    b = make_algorithm("dpsgd", 40, 0.5, {0: 0.5}, x0=x0, options=options)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    pkt = a.outgoing(x.clone())
    theirs = b.outgoing(y.clone())
    pkt.round = theirs.round = 1
    out = a.mix(x.clone(), {1: a.decode(theirs)})
    qx, qy = _top4(x), _top4(y)
    torch.testing.assert_close(a.public.own, qx, atol=0, rtol=0)
    step = 0.5 * (qy - qx)
    assert step.abs().max() > 0.1  # the neighbour differs: a real consensus step
    expected = (x if memory == "on" else qx) + step
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@pytest.mark.parametrize("spec", ["qsgd:16", "terngrad", "randk:0.1:scaled"])
def test_unbiased_codecs_are_rescaled_into_contractions(spec):
    """CHOCO's condition E‖Q(x) − x‖² ≤ (1 − δ)‖x‖² holds for Q/τ (but not for Q)."""
    from p2pfl.algorithms.public import contraction_scale
    from p2pfl.compression import make_codec

    codec = make_codec(spec, error_feedback=False, seed=1)
    x = torch.randn(2000)
    scale = contraction_scale(codec, x.numel())
    assert 0 < scale < 1
    errs = torch.stack([((codec.decode(codec.encode(x)) * scale - x) ** 2).sum()
                        for _ in range(20)])
    assert errs.mean() < (x ** 2).sum()


def test_a_restarted_choco_node_is_not_pulled_back_to_the_initial_model():
    """A fresh process holds x0 as its copy of every neighbour.  Until a resync brings
    their real copies, the consensus step leaves them out (it would pull towards x0),
    and the stale copies are asked for."""
    a, b = _pair("choco")
    x = torch.randn(40)
    b.restarted()
    assert b.public.fresh() == [] and b.resync_requests(1) == [0]
    torch.testing.assert_close(b.mix_async(x.clone(), {}), x, atol=0, rtol=0)
    a.on_resync_request(1)
    full = a.full_copies()[1]
    full.round = 5
    b.mix_async(x.clone(), {0: [b.decode(full)]})
    assert b.public.fresh() == [0]
    torch.testing.assert_close(b.public.copies[0], a.public.own, atol=0, rtol=0)


def test_a_full_copy_in_flight_keeps_its_round_when_the_sender_moves_on():
    """Frames are sent without copying: a resync packet must not be a view of x̂_i,
    or a message held by a slow link arrives as the next round's copy."""
    a, b = _pair("choco")
    a.on_resync_request(1)
    full = a.full_copies()[1]
    sent = bytes(full.frames[0])
    before = a.public.own.clone()
    a.outgoing(torch.randn(40))  # the next round moves x̂_a in place
    assert not torch.equal(a.public.own, before)
    assert bytes(full.frames[0]) == sent


def test_a_catch_up_in_flight_keeps_the_copy_it_was_sent_with():
    a, b = _pair("choco")
    packet = a.catchup(torch.randn(40), 1)
    sent = [bytes(f) for f in packet.frames]
    q = b.outgoing(torch.randn(40))
    q.round = 1
    a.mix(torch.randn(40), {1: a.decode(q)})  # moves a's copy of x̂_b in place
    assert [bytes(f) for f in packet.frames] == sent


def test_one_neighbour_naming_many_codecs_cannot_fill_the_table_for_the_others():
    """A node keeps a decoder per codec its neighbours use; one neighbour naming 15
    valid specs once filled the table, and the others' packets became undecodable."""
    x0 = torch.zeros(40)
    a = make_algorithm("choco", 40, 0.4, {1: 0.3, 2: 0.3}, x0=x0,
                       options=_opts("choco", "topk:0.3"))
    for i in range(20):
        spec = f"quant:0.00{i + 1}"
        enc = make_algorithm("choco", 40, 0.5, {0: 0.5}, x0=x0, options=_opts("choco", spec))
        packet = enc.outgoing(torch.randn(40))
        packet.round, packet.sender = 1, 1
        try:
            a.decode(packet)
        except ValueError:
            assert i >= 2  # its first two specs were taken
    other = make_algorithm("choco", 40, 0.5, {0: 0.5}, x0=x0,
                           options=_opts("choco", "quant:0.5"))
    packet = other.outgoing(torch.randn(40))
    packet.round, packet.sender = 1, 2
    assert a.decode(packet).tensor.numel() == 40  # neighbour 2's own codec still decodes


def test_a_node_back_from_offline_neither_mixes_nor_hands_out_its_old_copies():
    """Asynchronous CHOCO marked nothing while the node was away: back, it mixed with
    copies rounds behind their owners, and handed one out in a catch-up, which the
    owner then took as its own x̂ (losing the updates sent meanwhile)."""
    a, b = _pair("choco")
    for rnd in (1, 2, 3):  # b is offline: a's updates never reach it
        a.outgoing(torch.randn(40))
    b.came_back()
    assert b.public.fresh() == [] and b.resync_requests(4) == [0]
    catchup = b.catchup(torch.randn(40), 0)
    assert len(catchup.frames) == 1  # our model only, not the outdated copy of a's x̂
