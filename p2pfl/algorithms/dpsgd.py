"""D-PSGD: local SGD, then replace the model by the mixing-weighted average.

Update rule (ALGORITHMS.md, "Peer-to-peer gossip", D-PSGD; Lian et al. 2017)::

    x_i ← Σ_j w_ij x_j      after the local SGD steps

with Metropolis–Hastings weights w_ij by default.  In synchronous rounds the
weight of a neighbour whose model did not come goes to x_i, which keeps the
mixing matrix doubly stochastic (:func:`~.base.renormalised`).

:class:`DPSGD` exchanges full fp32 models; neighbours whose model did not
arrive in time, or holds a NaN or an infinity, are left out (their weight goes to
x_i; in asynchronous gossip the row is re-normalised over the rest).  The
finiteness test rides on the sum: the C kernel reports whether the mixed model
is finite, and only when it is not are the neighbours' models tested one by one
(:meth:`DPSGD.mix`).

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

from .base import GossipAlgorithm, Packet, all_finite, dense_packet, dense_tensor, renormalised
from .choco import CHOCO
from .kernel import weighted_sum_checked
from .options import DPSGDOptions
from .robust import robust_step

__all__ = ["DPSGD", "CompressedDPSGD"]


class DPSGD(GossipAlgorithm):
    """Exchange full fp32 models and average them with the mixing weights."""

    name = "dpsgd"
    Options = DPSGDOptions
    pure_mix = True  # the sum below (and the robust step) is always a new tensor
    _seen: tuple = ()  # the neighbours' models last mixed (an ALIE attacker's view)
    _rejected: tuple = ()  # senders left out since the last take_rejected()

    def outgoing(self, x: torch.Tensor) -> Packet:
        return dense_packet(x)

    def neighbour_models(self) -> list:
        return list(self._seen)

    def decode(self, packet: Packet) -> torch.Tensor:
        # a view (mix only reads it), screened for non-finite values by mix
        return dense_tensor(packet, self.numel, copy=False, check=False)

    def take_rejected(self) -> list:
        rejected, self._rejected = list(self._rejected), ()
        return rejected

    def mix(self, x: torch.Tensor, received: dict, to_self: bool = True) -> torch.Tensor:
        """A missing neighbour's weight goes to x_i (``to_self``; :func:`renormalised`)."""
        if self.robust[0] != "none":  # x_i + Σ_j w_ij · robust(x_j − x_i)
            received = self._screened(received)
            _, w = renormalised(self.self_weight, self.weights, received, to_self)
            if self.observe_neighbours:
                self._seen = tuple(received.values())
            return x + robust_step(x, received, w, self.robust, self.weights)
        out, finite = self._sum(x, received, to_self)
        if not finite:  # a non-finite model among the neighbours', or our own
            kept = self._screened(received)
            if len(kept) < len(received):
                received = kept
                out, _ = self._sum(x, received, to_self)
        if self.observe_neighbours:
            self._seen = tuple(received.values())
        return out

    def _sum(self, x: torch.Tensor, received: dict, to_self: bool) -> tuple:
        w_self, w = renormalised(self.self_weight, self.weights, received, to_self)
        order = sorted(received)  # a fixed order: float sums do not depend on arrival
        return weighted_sum_checked(x, w_self, [received[j] for j in order],
                                    [w[j] for j in order])

    def mix_async(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        """The latest usable model of each sender (each packet screened: a non-finite
        latest one does not hide an earlier good one)."""
        latest = {}
        for j, items in received.items():
            good = [v for v in items if all_finite(v)]
            self._rejected += (j,) * (len(items) - len(good))
            if good:
                latest[j] = good[-1]
        return self.mix(x, latest, to_self=False)  # not sent yet is not a failure

    def _screened(self, received: dict) -> dict:
        """``received`` without the models that hold a NaN or an infinity; their
        senders go to :meth:`take_rejected`."""
        bad = [j for j, v in received.items() if not all_finite(v)]
        self._rejected += tuple(bad)
        return {j: v for j, v in received.items() if j not in bad}


class CompressedDPSGD(CHOCO):
    """D-PSGD over compressed differences of public copies: CHOCO's rule at γ = 1."""

    name = "dpsgd"
    Options = DPSGDOptions

    def _gamma(self) -> float:
        return 1.0
