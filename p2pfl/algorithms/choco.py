"""CHOCO-SGD: gossip with compressed updates of public copies.

Koloskova, Stich, Jaggi, ICML 2019 (ALGORITHMS.md, "CHOCO-SGD"), at node i::

    x_i ← x_i − η ∇F_i(x_i)                       (local steps, done by the learner)
    q_i = Q(x_i − x̂_i);  send q_i to the neighbours
    x̂_j ← x̂_j + q_j      for j ∈ N(i) ∪ {i}
    x_i ← x_i + γ Σ_j w_ij (x̂_j − x̂_i)

The public copies x̂ are the algorithm's error memory: what compression drops
stays in x_i − x̂_i and is sent in later rounds, so no separate error-feedback
residual is needed (``--error-feedback on`` adds one anyway).  A copy that
missed an update is left out of the sum until it is resynchronised
(:mod:`p2pfl.algorithms.public`).
"""

from __future__ import annotations

import torch

from .base import GossipAlgorithm, Packet
from .public import PublicCopies

__all__ = ["CHOCO", "default_gamma"]


def default_gamma(spec: str) -> float:
    """Consensus step size γ for a codec spec.

    The reference experiments use γ ≈ 0.04 for top-1 %, 0.34 for QSGD-16 and
    0.45 for sign; for sparsifiers keeping a fraction p we take γ = min(1, 8p)
    (0.4 at 5 %), which the benchmark in ``benchmarks/`` tuned for learning.
    """
    head = spec.split("+", 1)[0]
    name, _, arg = head.partition(":")
    if name in ("topk", "randk", "stc", "sbc"):
        return min(1.0, 8.0 * float(arg.split(":")[0]))
    if name in ("sign", "terngrad"):
        return 0.45
    if name == "qsgd":
        return 0.34
    return 1.0 if name in ("none", "fp16", "bf16", "quant", "uniform") else 0.3


class CHOCO(GossipAlgorithm):
    """CHOCO-SGD over flat parameter vectors."""

    name = "choco"

    def __init__(self, numel, self_weight, weights, *, x0, settings) -> None:
        super().__init__(numel, self_weight, weights, x0=x0, settings=settings)
        from ..compression import make_codec

        spec = settings.get("compression") or "none"
        codec = make_codec(spec, error_feedback=settings.get("error_feedback") == "on",
                           seed=settings.get("codec_seed"))
        self.gamma = settings.get("gamma") or default_gamma(spec)
        self.public = PublicCopies(x0, weights, codec)

    def outgoing(self, x: torch.Tensor) -> Packet:
        return self.public.publish(x - self.public.own)

    def full_copies(self) -> dict:
        return self.public.full_copies()

    def decode(self, packet: Packet):
        return self.public.decode(packet)

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        pub = self.public
        pub.apply(received)
        step = torch.zeros_like(x)
        for j in pub.fresh():
            step.add_(pub.copies[j] - pub.own, alpha=self.weights[j])
        return x.add_(step, alpha=self.gamma)

    def resync_requests(self, rnd: int) -> list:
        return self.public.resync_requests(rnd)

    def on_resync_request(self, peer) -> None:
        if peer in self.public.copies:
            self.public.asked_by.add(peer)
