"""Byzantine-robust aggregation of client updates (ALGORITHMS.md, "Robust aggregation").

``--aggregator`` picks how the server combines the updates Δ_1 … Δ_n of a round:

* ``mean``: Σ_i n_i Δ_i / Σ_i n_i, weighted by data size (FedAvg, the default);
* ``median``: the coordinate-wise median (Yin et al., ICML 2018);
* ``trimmed:BETA``: per coordinate, the mean after dropping the ⌊βn⌋ largest and
  ⌊βn⌋ smallest values (Yin et al. 2018), 0 <= β < 0.5;
* ``krum:F``: the update with the smallest score(i) = Σ of the squared distances
  to its n − F − 2 nearest other updates (Blanchard et al., NeurIPS 2017);
* ``multikrum:F:M``: the mean of the M best-scored updates (Blanchard et al. 2017);
* ``clip:TAU``: centred clipping (Karimireddy, He, Jaggi, ICML 2021),
  v ← v + (1/n) Σ_i clip(Δ_i − v, τ) with clip(z, τ) = z · min(1, τ/‖z‖),
  iterated L = 3 times from the last round's aggregate;
* ``normclip``: each Δ_i scaled down to at most the median update norm (the lower
  middle one for an even count), then
  the data-size weighted mean.  Not from a paper: it is the safeguard our CFL
  has always used (its default there), available to FedAvg and STC too.

``mean`` and ``normclip`` use the data sizes: the other robust rules treat every
update alike, as the papers do.  ``auto`` (the flag's default) is ``mean`` in
FedAvg and STC and ``normclip`` in CFL.  All are pure functions of their inputs, except that centred
clipping starts from the previous aggregate (kept in :class:`Aggregator`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.robust import trim_count
from ..errors import ConfigError
from .base import weighted_mean

__all__ = ["Aggregator", "parse_aggregator", "coordinate_median", "trimmed_mean",
           "krum_scores", "multi_krum", "centred_clip", "clip_to_median", "AGGREGATORS",
           "resolve"]

AGGREGATORS = ("mean", "median", "trimmed:BETA", "krum:F", "multikrum:F:M", "clip:TAU",
               "normclip")
CLIP_ITERATIONS = 3


def _stack(updates: list) -> torch.Tensor:
    if not updates:
        raise ValueError("nothing to aggregate")
    return torch.stack([u.reshape(-1).to(torch.float64) for u in updates])


def coordinate_median(updates: list) -> torch.Tensor:
    """Per coordinate, the median (the mean of the two middle values for even n)."""
    x = _stack(updates).sort(0).values
    n = x.shape[0]
    mid = (x[(n - 1) // 2] + x[n // 2]) / 2
    return mid.to(torch.float32)


def trimmed_mean(updates: list, beta: float) -> torch.Tensor:
    """Per coordinate, the mean after dropping the ⌊βn⌋ largest and smallest values."""
    x = _stack(updates).sort(0).values
    n = x.shape[0]
    k = trim_count(beta, n)
    if n - 2 * k < 1:
        raise ValueError(f"trimmed:{beta} leaves nothing of {n} updates")
    return x[k:n - k].mean(0).to(torch.float32)


def krum_scores(updates: list, f: int) -> torch.Tensor:
    """score(i) = Σ of the squared distances from Δ_i to its n − f − 2 nearest others."""
    x = _stack(updates)
    n = x.shape[0]
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))
    k = max(1, n - f - 2)
    return d2.sort(1).values[:, :min(k, n - 1)].sum(1) if n > 1 else torch.zeros(1)


def multi_krum(updates: list, f: int, m: int = 1) -> torch.Tensor:
    """The mean of the ``m`` updates with the smallest Krum scores (Krum: m = 1)."""
    scores = krum_scores(updates, f)
    best = torch.argsort(scores, stable=True)[:max(1, min(m, len(updates)))]
    return _stack(updates)[best].mean(0).to(torch.float32)


def centred_clip(updates: list, tau: float, start: torch.Tensor,
                 iterations: int = CLIP_ITERATIONS) -> torch.Tensor:
    """v ← v + (1/n) Σ_i clip(Δ_i − v, τ), ``iterations`` times from ``start``."""
    x = _stack(updates)
    v = start.reshape(-1).to(torch.float64)
    for _ in range(iterations):
        z = x - v
        norms = z.norm(dim=1, keepdim=True)
        scale = torch.clamp(tau / norms.clamp_min(1e-30), max=1.0)
        v = v + (z * scale).mean(0)
    return v.to(torch.float32)


def clip_to_median(updates: list) -> list:
    """Each update scaled down to at most the median update norm (``torch.median``:
    the lower of the two middle norms for an even count)."""
    norms = torch.stack([u.norm() for u in updates])
    cap = float(norms.median())
    return [u * min(1.0, cap / max(float(n), 1e-12)) for u, n in zip(updates, norms)]


@dataclass
class Aggregator:
    """A parsed ``--aggregator`` spec; call it on ``(updates, weights)``."""

    name: str
    beta: float = 0.0
    f: int = 0
    m: int = 1
    tau: float = 0.0
    last: torch.Tensor | None = None  # centred clipping: the previous aggregate

    def __call__(self, updates: list, weights: list) -> torch.Tensor:
        if self.name == "mean":
            return weighted_mean(updates, weights)
        if self.name == "normclip":
            return weighted_mean(clip_to_median(updates), weights)
        if self.name == "median":
            return coordinate_median(updates)
        if self.name == "trimmed":
            return trimmed_mean(updates, self.beta)
        if self.name in ("krum", "multikrum"):
            return multi_krum(updates, self.f, self.m)
        start = self.last if self.last is not None else torch.zeros_like(updates[0])
        self.last = centred_clip(updates, self.tau, start)
        return self.last


def _number(text: str, kind: type, spec: str):
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"aggregator {spec!r}: {text!r} is not "
                          f"{'an integer' if kind is int else 'a number'}") from None


def resolve(spec: str, default: str) -> str:
    """``--aggregator`` with ``auto`` replaced by a strategy's ``default``."""
    return default if spec == "auto" else spec


def parse_aggregator(spec: str) -> Aggregator:
    """``mean``, ``median``, ``trimmed:BETA``, ``krum:F``, ``multikrum:F:M``, ``clip:TAU``."""
    name, *args = str(spec).split(":")
    shapes = {"mean": 0, "median": 0, "trimmed": 1, "krum": 1, "multikrum": 2, "clip": 1,
              "normclip": 0}
    if shapes.get(name) != len(args):
        raise ConfigError(f"unknown aggregator {spec!r}; valid: {', '.join(AGGREGATORS)}")
    if name == "trimmed":
        beta = _number(args[0], float, spec)
        if not 0 <= beta < 0.5:
            raise ConfigError(f"aggregator {spec!r}: BETA must be in [0, 0.5)")
        return Aggregator(name, beta=beta)
    if name in ("krum", "multikrum"):
        f = _number(args[0], int, spec)
        m = _number(args[1], int, spec) if name == "multikrum" else 1
        if f < 0 or m < 1:
            raise ConfigError(f"aggregator {spec!r}: F must be >= 0 and M >= 1")
        return Aggregator(name, f=f, m=m)
    if name == "clip":
        tau = _number(args[0], float, spec)
        if not tau > 0:
            raise ConfigError(f"aggregator {spec!r}: TAU must be positive")
        return Aggregator(name, tau=tau)
    return Aggregator(name)
