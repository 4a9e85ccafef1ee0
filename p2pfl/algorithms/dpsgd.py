"""D-PSGD: local SGD, then replace the model by the mixing-weighted average.

Update rule (ALGORITHMS.md, "Peer-to-peer gossip", D-PSGD; Lian et al. 2017)::

    x_i ← Σ_j w_ij x_j      after the local SGD steps

with Metropolis–Hastings weights w_ij by default.

:class:`DPSGD` exchanges full fp32 models; neighbours whose model did not
arrive in time are left out and the row is re-normalised over the rest.

:class:`CompressedDPSGD` exchanges compressed model *differences* with error
feedback (in the manner of DCD-PSGD, Tang et al. 2018): node i publishes
q_i = C(x_i − x̂_i + e_i), keeps e_i ← x_i − x̂_i + e_i − q_i (the one
:class:`~p2pfl.compression.ErrorFeedback` wrapper), every copy x̂_i ← x̂_i + q_i,
and then x_i ← Σ_j w_ij x̂_j over the fresh public copies (a stale copy's
weight goes to x̂_i).  With C the identity this is exactly D-PSGD; without
error feedback the part of each change that C drops is lost.
"""

from __future__ import annotations

import torch

from .base import GossipAlgorithm, Packet, dense_packet, dense_tensor, renormalised
from .public import PublicCopies

__all__ = ["DPSGD", "CompressedDPSGD"]


class DPSGD(GossipAlgorithm):
    """Exchange full fp32 models and average them with the mixing weights."""

    name = "dpsgd"

    def outgoing(self, x: torch.Tensor) -> Packet:
        return dense_packet(x)

    def decode(self, packet: Packet) -> torch.Tensor:
        return dense_tensor(packet, self.numel)

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        w_self, w = renormalised(self.self_weight, self.weights, received)
        out = x * w_self
        for j, xj in received.items():
            out.add_(xj, alpha=w[j])
        return out


class CompressedDPSGD(GossipAlgorithm):
    """D-PSGD over compressed differences of public copies, with error feedback."""

    name = "dpsgd"

    def __init__(self, numel, self_weight, weights, *, x0, settings) -> None:
        super().__init__(numel, self_weight, weights, x0=x0, settings=settings)
        from ..compression import make_codec

        ef = settings.get("error_feedback", "auto")
        codec = make_codec(settings["compression"], seed=settings.get("codec_seed"),
                           error_feedback=None if ef == "auto" else ef == "on")
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
        fresh = pub.fresh()
        w_self, w = renormalised(self.self_weight, self.weights, fresh)
        out = pub.own * w_self
        for j in fresh:
            out.add_(pub.copies[j], alpha=w[j])
        return out

    def resync_requests(self, rnd: int) -> list:
        return self.public.resync_requests(rnd)

    def on_resync_request(self, peer) -> None:
        if peer in self.public.copies:
            self.public.asked_by.add(peer)
