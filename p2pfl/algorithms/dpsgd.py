"""D-PSGD: local SGD, then replace the model by the mixing-weighted average.

Update rule (ALGORITHMS.md, "Peer-to-peer gossip", D-PSGD; Lian et al. 2017)::

    x_i ← Σ_j w_ij x_j      after the local SGD steps

with Metropolis–Hastings weights w_ij by default.  Neighbours whose model did
not arrive in time are left out and the row is re-normalised over the rest.
"""

from __future__ import annotations

import torch

from .base import GossipAlgorithm, Packet, dense_packet, dense_tensor, renormalised

__all__ = ["DPSGD"]


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
