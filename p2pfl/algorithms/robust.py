"""Byzantine-robust mixing for gossip (ALGORITHMS.md, "Byzantine-robust gossip").

``--robust`` picks how a node combines what its neighbours sent:

* ``none``: the mixing-weighted average (D-PSGD, CHOCO), unchanged;
* ``clip[:TAU]``: ClippedGossip (He, Karimireddy, Jaggi 2022),
  x_i ← x_i + Σ_j w_ij · clip(x_j − x_i, τ_i), clip(z, τ) = z · min(1, τ/‖z‖).
  Without TAU, τ_i is adaptive as in the paper: the weighted percentile of the
  distances ‖x_j − x_i‖ that leaves the neighbours carrying the largest
  (1 − δ) share of the weight unclipped, δ = :data:`ADAPTIVE_DELTA`;
* ``trimmed:BETA``: BRIDGE-T (Yang and Bajwa 2019): per coordinate, drop the
  b = ⌊β·k⌋ largest and b smallest of the k neighbours' values, and average the
  rest with the node's own value (which is never dropped).  b is the number of
  Byzantine neighbours tolerated: ``trimmed:0.25`` drops one each way of 4.

With CHOCO the differences that are clipped (or the values trimmed) are those of
the public copies, x̂_j − x̂_i, and the result is taken with the step size γ.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

__all__ = ["parse_robust", "robust_step", "trim_count", "ADAPTIVE_DELTA"]

#: Adaptive clipping: the share of neighbour weight that may be clipped.
ADAPTIVE_DELTA = 0.25


def parse_robust(spec: str) -> tuple:
    """``none`` → ("none", 0); ``clip`` → ("clip", 0 = adaptive); ``clip:TAU``;
    ``trimmed:BETA`` (0 <= BETA < 0.5)."""
    name, _, arg = str(spec).partition(":")
    try:
        value = float(arg) if arg else 0.0
    except ValueError:
        value = -1.0
    if name == "none" and not arg:
        return name, 0.0
    if name == "clip" and (not arg or 0 < value < math.inf):  # clip:inf clips nothing
        return name, value
    if name == "trimmed" and arg and 0 <= value < 0.5:
        return name, value
    known = name in ("none", "clip", "trimmed")  # a known rule's value out of range
    raise ConfigError(f"{'invalid' if known else 'unknown'} --robust {spec!r}; valid: none, "
                      "clip, clip:TAU (> 0), trimmed:BETA (0 <= BETA < 0.5)")


def trim_count(beta: float, n: int) -> int:
    """⌊β·n⌋, exact where float rounding puts β·n just below an integer (0.29 · 100)."""
    return int(beta * n + 1e-9)


def adaptive_tau(dists: torch.Tensor, weights: torch.Tensor,
                 delta: float = ADAPTIVE_DELTA) -> float:
    """The smallest distance such that the neighbours within it hold >= (1 − δ) of the weight."""
    order = torch.argsort(dists)
    share = torch.cumsum(weights[order], 0) / weights.sum()
    k = int(torch.searchsorted(share, torch.tensor(1 - delta - 1e-9, dtype=share.dtype)))
    return float(dists[order][min(k, len(order) - 1)])


def robust_step(own: torch.Tensor, others: dict, weights: dict, spec: tuple,
                neighbourhood: dict | None = None) -> torch.Tensor:
    """Σ_j w_ij · (robust) (v_j − own) over ``others`` (the step to add to the model).

    ``weights`` are the mixing weights of the neighbours in ``others``;
    ``neighbourhood`` those of every neighbour mixed this round, heard or not (None:
    ``weights``).  What a rule assumes of the Byzantine neighbours holds of the whole
    neighbourhood, whoever is missing: BRIDGE-T trims b = ⌊β·k⌋ of its k neighbours
    each way, and adaptive clipping clips the farthest δ of its neighbour weight, a
    missing neighbour's weight counting as at distance 0 (it went to the node itself).
    Taken of those heard alone, b was 0 of 3 heard on a torus and adaptive τ clipped
    nothing: one sign-flip neighbour among them was mixed in whole.  With fewer than
    2b + 1 heard, BRIDGE-T keeps the own model.
    """
    if not others:
        return torch.zeros_like(own)
    keys = sorted(others, key=str)
    diffs = torch.stack([others[j] - own for j in keys])
    heard = [weights[j] for j in keys]
    w = torch.tensor(heard, dtype=own.dtype)
    everyone = weights if neighbourhood is None else neighbourhood
    name, value = spec
    if name == "clip":
        norms = diffs.norm(dim=1)
        tau = value if value > 0 else _adaptive_tau_of(norms, heard, everyone)
        scale = torch.clamp(tau / norms.clamp_min(1e-30), max=1.0)
        return (w[:, None] * scale[:, None] * diffs).sum(0)
    if name == "trimmed":  # BRIDGE-T: the model becomes own and the kept neighbours' mean
        k = diffs.shape[0]
        b = trim_count(value, max(k, len(everyone)))
        if k <= 2 * b:  # too few heard to trim b each way
            return torch.zeros_like(own)
        kept = diffs.sort(0).values[b:k - b]  # neighbours' values less own, per coordinate
        return kept.sum(0) / (k - 2 * b + 1)  # own's difference to itself is 0
    return (w[:, None] * diffs).sum(0)


def _adaptive_tau_of(norms: torch.Tensor, w: list, everyone: dict) -> float:
    """Adaptive τ over the whole neighbourhood: the weight of the neighbours not heard
    sits at distance 0 (in float64: float32 weights moved a share of 0.75 below it)."""
    missing = sum(everyone.values()) - sum(w)
    norms = norms.to(torch.float64)
    if missing > 1e-12:
        norms, w = torch.cat([norms, norms.new_zeros(1)]), w + [missing]
    return adaptive_tau(norms, torch.tensor(w, dtype=torch.float64))
