"""CHOCO stays stable: the default γ converges, and quasi-global momentum holds nodes together.

Regression tests for compressed gossip that drifted apart on mnist1d (torus:4x4,
stc:0.05+golomb): γ = 6p was past CHOCO's stability bound, and a local momentum
buffer kept pushing each node towards its own data after every consensus step.
"""

import numpy as np
import pytest
import torch
from torch import nn

from p2pfl.algorithms.choco import default_gamma
from p2pfl.algorithms.consensus import run_consensus
from p2pfl.errors import ConfigError
from p2pfl.topology import build
from p2pfl.training import LocalTrainer, QuasiGlobalMomentum, SGDConfig

TORUS = np.array(build("torus:4x4").weights)


def _gossip(spec, gamma=None, iterations=150, d=500):
    torch.manual_seed(0)
    return run_consensus(TORUS, torch.randn(16, d), compression=spec, gamma=gamma,
                         iterations=iterations, every=iterations // 3)["errors"]


@pytest.mark.parametrize("spec", ["stc:0.05", "sbc:0.05", "topk:0.05"])
def test_default_gamma_converges_on_the_benchmark_torus(spec):
    """CHOCO-Gossip (no SGD) with the default γ: the relative error keeps falling."""
    assert default_gamma(spec) == pytest.approx(0.1)
    errors = [e for _, e in _gossip(spec)]
    assert errors[-1] < 1e-4 and errors[-1] < errors[0]


def test_the_former_gamma_does_not_converge():
    """γ = 0.3 (the former 6p) is past the bound: the error stalls and grows."""
    errors = [e for _, e in _gossip("stc:0.05", gamma=0.3, iterations=300)]
    assert min(errors) > 1e-3 and errors[-1] > errors[1]


def _node(target: float, mode: str) -> LocalTrainer:
    """Loss ½(0.3w − 0.3·target)²: optimum w = target, curvature 0.09 (a flat direction)."""
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    x, y = np.full((8, 1), 0.3, np.float32), np.full(8, 0.3 * target, np.float32)
    cfg = SGDConfig(lr=0.1, momentum=0.9, batch_size=8, local_steps=2, momentum_mode=mode)
    trainer = LocalTrainer(model, x, np.zeros(8, np.int64), cfg, seed=0)
    trainer.target = torch.from_numpy(y)
    return trainer


def _train_mse(t: LocalTrainer) -> None:
    """Full-batch steps on ½(w − target)², through the trainer's optimizer and momentum."""
    if t.cfg.momentum_mode == "quasi-global":
        t._load_quasi_global()
    for _ in range(t.num_steps()):
        loss = 0.5 * ((t.model(t.x).squeeze(1) - t.target) ** 2).mean()
        t._step(loss)


def _disagreement(mode: str, rounds: int = 150, gamma: float = 0.1) -> float:
    """Two nodes with opposite optima, a weak consensus step (as CHOCO's) after each round."""
    a, b = _node(1.0, mode), _node(-1.0, mode)
    for _ in range(rounds):
        _train_mse(a)
        _train_mse(b)
        wa, wb = a.model.weight.data.clone(), b.model.weight.data.clone()
        a.model.weight.data += gamma * (wb - wa)
        b.model.weight.data += gamma * (wa - wb)
    return float((a.model.weight - b.model.weight).abs().detach())


def test_quasi_global_momentum_keeps_heterogeneous_nodes_together():
    """A local buffer amplifies each node's pull to its own optimum by 1/(1 − β)."""
    local, quasi = _disagreement("local"), _disagreement("quasi-global")
    assert quasi < 0.5 * local


def test_quasi_global_buffer_is_the_bias_corrected_average_motion():
    qg, p = QuasiGlobalMomentum(), [torch.zeros(3)]
    assert qg.begin_round(p, 0.9, 2, 0.1) is None  # first round: nothing moved yet
    p[0] -= 0.4  # 2 steps at lr 0.1 moved it by 0.4: d = 2 per step
    assert torch.allclose(qg.begin_round(p, 0.9, 2, 0.1), torch.full((3,), 2.0))
    p[0] -= 0.2  # d = 1; m̂ = (0.81·0.19·2 + 0.19·1) / (0.81·0.19 + 0.19)
    expect = (0.81 * 0.19 * 2 + 0.19) / (0.81 * 0.19 + 0.19)
    assert torch.allclose(qg.begin_round(p, 0.9, 2, 0.1), torch.full((3,), expect))


def test_bad_momentum_mode_is_refused():
    with pytest.raises(ConfigError, match="momentum_mode"):
        SGDConfig(momentum_mode="global")
