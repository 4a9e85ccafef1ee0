"""D-PSGD: local SGD, then replace the model by the mixing-weighted average.

Update rule (ALGORITHMS.md, "Peer-to-peer gossip", D-PSGD; Lian et al. 2017)::

    x_i ← Σ_j w_ij x_j      after the local SGD steps

with Metropolis–Hastings weights w_ij by default.

:class:`DPSGD` exchanges full fp32 models; neighbours whose model did not
arrive in time are left out and the row is re-normalised over the rest.

:class:`CompressedDPSGD` exchanges compressed model *differences*: node i
publishes q_i = C(x_i − x̂_i), every copy x̂_i ← x̂_i + q_i, and then::

    x_i ← (x_i − x̂_i) + Σ_j w_ij x̂_j        (error feedback on, the default)
    x_i ← Σ_j w_ij x̂_j                      (--error-feedback off: DCD-PSGD)

The residual x_i − x̂_i is the error-feedback memory: what C dropped is sent
in later rounds.  Without it (DCD-PSGD, Tang et al. 2018) the dropped part is
lost.  With C the identity both are exactly D-PSGD; with error feedback this
is CHOCO-SGD at γ = 1, which needs a gentle codec (quantisers, fp16, top-k
with a large k); use ``--algorithm choco`` for aggressive sparsification.
"""

from __future__ import annotations

import torch

from .base import GossipAlgorithm, Packet, dense_packet, dense_tensor, renormalised
from .choco import CHOCO
from .kernel import weighted_sum
from .options import DPSGDOptions
from .robust import robust_step

__all__ = ["DPSGD", "CompressedDPSGD"]


class DPSGD(GossipAlgorithm):
    """Exchange full fp32 models and average them with the mixing weights."""

    name = "dpsgd"
    Options = DPSGDOptions
    pure_mix = True  # the sum below (and the robust step) is always a new tensor

    def outgoing(self, x: torch.Tensor) -> Packet:
        return dense_packet(x)

    def neighbour_models(self) -> list:
        return list(getattr(self, "_seen", []))

    def decode(self, packet: Packet) -> torch.Tensor:
        return dense_tensor(packet, self.numel, copy=False)  # mix only reads it

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        self._seen = list(received.values())
        w_self, w = renormalised(self.self_weight, self.weights, received)
        if self.robust[0] != "none":  # x_i + Σ_j w_ij · robust(x_j − x_i)
            return x + robust_step(x, received, w, self.robust)
        order = sorted(received)  # a fixed order: float sums do not depend on arrival
        return weighted_sum(x, w_self, [received[j] for j in order], [w[j] for j in order])


class CompressedDPSGD(CHOCO):
    """D-PSGD over compressed differences of public copies: CHOCO's rule at γ = 1."""

    name = "dpsgd"
    Options = DPSGDOptions

    def _gamma(self) -> float:
        return 1.0
