"""Public copies x̂ agree bit for bit between their owner and every neighbour.

CHOCO's correctness rests on every node applying the same q_j to its copy of
x̂_j (ALGORITHMS.md, CHOCO-SGD, line 3).  Rescaled codecs (qsgd, terngrad,
scaled random-k: q/τ) once drifted apart because the owner used a fused
multiply-add and the neighbours a separate multiply and add.
"""

import pytest
import torch

from p2pfl.algorithms import CHOCO
from p2pfl.algorithms.choco import default_gamma
from p2pfl.algorithms.options import CHOCOOptions
from p2pfl.algorithms.public import PublicCopies, contraction_scale
from p2pfl.compression import STAGES, make_codec, parse_spec

#: Valid specs that together use every registered stage CHOCO can run
#: (powersgd is refused for flat vectors elsewhere).
SPECS = [
    "none", "none+deflate", "none+bz2", "none+lzma:1", "fp16", "bf16", "quant:0.001",
    "quant:0.0039+cabac", "dq:0.001+cabac", "dq:0.01", "uniform:4+cabac", "uniform:8+lzma",
    "qsgd:16", "qsgd:4+cabac",
    "qsgd:16+deflate", "terngrad", "terngrad+cabac", "sign", "sign+cabac", "topk:0.05",
    "topk:0.05+golomb", "topk:0.01+quant:0.001+cabac", "topk:0.05+sign+golomb",
    "topk:0.1+fp16+bz2", "topk:0.05+qsgd:8+golomb", "randk:0.05", "randk:0.05:scaled",
    "randk:0.05:scaled+golomb+deflate", "randk:0.1+terngrad", "threshold:0.02",
    "threshold:0.02+quant:0.01+golomb+cabac", "stc:0.05+golomb", "stc:0.05+cabac",
    "sbc:0.05+golomb", "sbc:0.05+golomb+deflate", "stc:0.01",
]
SKIPPED = {"powersgd"}
RESCALED = [s for s in SPECS if contraction_scale(make_codec(s, error_feedback=False), 2000)
            != 1.0]


def test_specs_cover_every_stage_and_the_rescaled_codecs():
    used = {name for spec in SPECS for name, _ in parse_spec(spec)}
    assert used == set(STAGES) - SKIPPED
    assert {parse_spec(s)[0][0] for s in RESCALED} >= {"qsgd", "terngrad", "randk"}


def _delta(g, d):
    """A random change: mostly small, a few large entries, a few exact zeros."""
    v = torch.randn(d, generator=g) * 0.01
    v[torch.randint(0, d, (20,), generator=g)] *= 50.0
    v[torch.randint(0, d, (20,), generator=g)] = 0.0
    return v


@pytest.mark.parametrize("spec", SPECS)
def test_owner_and_neighbour_copies_are_bitwise_equal(spec):
    if "cabac" in spec:
        pytest.importorskip("p2pfl.compression.cabac")
    d, g = 2000, torch.Generator().manual_seed(7)
    x0 = torch.randn(d, generator=g)
    owner = PublicCopies(x0, [], make_codec(spec, error_feedback=False, seed=3))
    neighbour = PublicCopies(x0, [0], make_codec("none", error_feedback=False))
    x = x0.clone()
    for rnd in range(1, 31):
        x += _delta(g, d)
        packet = owner.publish(x - owner.own)
        packet.round = rnd
        neighbour.apply({0: neighbour.decode(packet)})
        assert not neighbour.stale
        assert torch.equal(owner.own, neighbour.copies[0]), f"{spec}: round {rnd}"


@pytest.mark.parametrize("spec", ["qsgd:16", "terngrad", "randk:0.05:scaled", "stc:0.05+golomb"])
def test_choco_pair_keeps_copies_equal(spec):
    """Two CHOCO nodes, local noise steps and mixing: each holds the other's exact x̂."""
    d, g = 2000, torch.Generator().manual_seed(1)
    x0 = torch.randn(d, generator=g)
    nodes = [CHOCO(d, 0.5, {1 - i: 0.5}, x0=x0,
                   options=CHOCOOptions(codec=spec, gamma=default_gamma(spec)), seed=i)
             for i in range(2)]
    xs = [x0.clone(), x0.clone()]
    for rnd in range(1, 31):
        xs = [x + _delta(g, d) for x in xs]
        packets = [n.outgoing(x) for n, x in zip(nodes, xs)]
        for p in packets:
            p.round = rnd
        xs = [n.mix(x, {1 - i: n.decode(packets[1 - i])})
              for i, (n, x) in enumerate(zip(nodes, xs))]
        for i in range(2):
            assert torch.equal(nodes[i].public.own, nodes[1 - i].public.copies[i])
