"""What a Byzantine gossip node sends (ALGORITHMS.md, "Attacks used in these papers").

A node with a profile ``behaviour`` other than ``honest`` runs its local steps
and mixes like any node, but replaces the model it publishes by the following (it
keeps its honest model: "send −k·(honest update)", ALGORITHMS.md; kept, the flipped
model compounded round after round, went non-finite by round 30 and was dropped as
undecodable, and the attack became silence):

* ``sign_flip``: start − k·Δ, the local update Δ = x − start negated and scaled
  by k = :data:`SIGN_FLIP_SCALE`;
* ``random``: start + Gaussian noise of :data:`RANDOM_SCALE` times ‖Δ‖;
* ``noisy``: x + Gaussian noise of norm ‖Δ‖;
* ``alie`` ("a little is enough", Baruch et al., NeurIPS 2019): per coordinate
  μ − z·σ of the models it observes (its own and its neighbours'), with
  z = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − f, n the models observed and f = 1;
* ``silent``: nothing at all;
* ``label_flip``: trains on labels c → C − 1 − c (the data, not the message).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

__all__ = ["corrupt", "alie_z", "SIGN_FLIP_SCALE", "RANDOM_SCALE", "GOSSIP_BEHAVIOURS"]

SIGN_FLIP_SCALE = 4.0
RANDOM_SCALE = 100.0
GOSSIP_BEHAVIOURS = ("honest", "label_flip", "random", "noisy", "sign_flip", "alie", "silent")


def alie_z(n: int, f: int = 1) -> float:
    """Baruch et al.'s z for n observed models of which f are the attacker's."""
    s = math.floor(n / 2 + 1) - f
    p = min(max((n - s) / n, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def corrupt(x: torch.Tensor, start: torch.Tensor, behaviour: str, rng: np.random.Generator,
            observed: list) -> torch.Tensor | None:
    """The model a ``behaviour`` node publishes after its local steps (None: silent)."""
    delta = x - start
    if behaviour == "sign_flip":
        return start - SIGN_FLIP_SCALE * delta
    if behaviour in ("random", "noisy"):
        noise = torch.from_numpy(rng.standard_normal(x.numel()).astype(np.float32))
        noise *= float(delta.norm()) / max(float(noise.norm()), 1e-12)
        return start + RANDOM_SCALE * noise if behaviour == "random" else x + noise
    if behaviour == "alie":
        stack = torch.stack([x] + list(observed))
        if stack.shape[0] < 2:
            return x
        return stack.mean(0) - alie_z(stack.shape[0]) * stack.std(0)
    if behaviour == "silent":
        return None
    return x
