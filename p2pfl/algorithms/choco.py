"""CHOCO-SGD: gossip with compressed updates of public copies.

Koloskova, Stich, Jaggi, ICML 2019 (ALGORITHMS.md, "CHOCO-SGD"), at node i::

    x_i ← x_i − η ∇F_i(x_i)                       (local steps, done by the learner)
    q_i = Q(x_i − x̂_i);  send q_i to the neighbours
    x̂_j ← x̂_j + q_j      for j ∈ N(i) ∪ {i}
    x_i ← x_i + γ Σ_j w_ij (x̂_j − x̂_i)

The residual x_i − x̂_i is the error memory: what compression drops stays
there and is sent in later rounds.  It is the only memory: wrapping the codec
in :class:`~p2pfl.compression.ErrorFeedback` as well would count the dropped
part twice.  ``--error-feedback off`` discards the residual after each round
(x_i ← x̂_i + γ Σ_j w_ij (x̂_j − x̂_i)), so what compression drops is lost.

A copy that missed an update is left out of the sum until it is
resynchronised (:mod:`p2pfl.algorithms.public`).
"""

from __future__ import annotations

import torch

from .base import GossipAlgorithm, Packet, dense_packet, dense_tensor
from .options import CHOCOOptions
from .public import PublicCopies
from .robust import robust_step

__all__ = ["CHOCO", "default_gamma"]


def default_gamma(spec: str) -> float:
    """Consensus step size γ for a codec spec.

    The reference experiments use γ ≈ 0.04 for top-1 % and 0.01 for random-1 %
    (consensus only), 0.34 for QSGD-16 and 0.45 for sign.

    For top-k-like sparsifiers keeping a fraction p we take γ = min(1, 2p).
    CHOCO converges only for γ below a bound that shrinks with p and grows
    with the spread of W's spectrum, β = ‖I − W‖₂ ≤ 2 (Koloskova et al. 2019
    prove linear convergence of CHOCO-Gossip for γ ≤ γ* = ρ²δ/(16ρ + ρ² + 4β²
    + 2ρβ² − 8ρδ), with δ = p for top-k; γ* itself is far smaller).  Measured with
    CHOCO-Gossip alone (:func:`~p2pfl.algorithms.consensus.run_consensus`, no SGD), the error
    stops falling and then grows once γβ/p exceeds about 5 (torus:4x4, β = 1.6:
    stc/sbc/top-5 % at γ = 0.2 and top-1 % at γ = 0.04; top-10 % already at
    γ = 0.3), and always fell for γβ/p ≤ 3.2 (torus, ring and exponential
    graphs); 2p keeps that margin for β up to 1.6.  The former 6p (0.3 at 5 %)
    was past the bound: the consensus distance of the mnist1d benchmark grew
    for 300 rounds.  Random-k keeps no large entries, so γ = p.  Sign gets
    0.3: at the reference 0.45 one benchmark run diverged near round 100.
    QSGD gets 0.2: at the reference 0.34 the compressed-gossip benchmark
    (mnist1d, torus:4x4, Dirichlet 1.0, seed 3) diverged at round 109 (14 of 16
    nodes reached non-finite weights); at 0.2 it stays finite.
    """
    head = spec.split("+", 1)[0]
    name, _, arg = head.partition(":")
    if name in ("topk", "stc", "sbc"):
        return min(1.0, 2.0 * float(arg.split(":")[0]))
    if name == "randk":
        return float(arg.split(":")[0])
    if name in ("sign", "terngrad"):
        return 0.3
    if name == "qsgd":
        return 0.2
    if name == "powersgd":
        return 0.3
    return 1.0  # quantisers that keep every entry: fp16, bf16, quant, uniform


class CHOCO(GossipAlgorithm):
    """CHOCO-SGD over flat parameter vectors."""

    name = "choco"

    Options = CHOCOOptions

    def __init__(self, numel, self_weight, weights, *, x0, options, seed=None,
                 shapes=None, peer_codecs=None) -> None:
        super().__init__(numel, self_weight, weights, x0=x0, options=options, seed=seed,
                         shapes=shapes, peer_codecs=peer_codecs)
        from ..compression import make_codec

        codec = make_codec(options.codec, seed=seed, max_numel=numel, shapes=self.shapes)
        self.gamma = self._gamma()
        self.memory = options.error_feedback
        self.public = PublicCopies(x0, weights, codec, allowed=self.peer_codecs)

    def _gamma(self) -> float:
        return self.options.gamma

    def outgoing(self, x: torch.Tensor) -> Packet:
        return self.public.publish(x - self.public.own)

    def neighbour_models(self) -> list:
        return [self.public.copies[j] for j in self.public.fresh()]

    def full_copies(self) -> dict:
        return self.public.full_copies()

    def decode(self, packet: Packet):
        return self.public.decode(packet)

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        self.public.apply(received)
        return self._consensus_step(x)

    def mix_async(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        """Without a barrier: apply every q that arrived, in order (each moves x̂_j),
        then take one consensus step over the copies that are current, but not those of
        neighbours that said they left (:attr:`absent`): nothing marks their copies
        stale, and a neighbour offline for good from round 2 pulled the nodes next to
        it towards its model of round 2 to their last round."""
        for j in sorted(received, key=str):
            for update in received[j]:
                self.public.apply({j: update}, every_round=False)
        return self._consensus_step(x)

    def _consensus_step(self, x: torch.Tensor) -> torch.Tensor:
        pub = self.public
        mixed = [j for j in pub.fresh() if j not in self.absent]
        if self.robust[0] != "none":  # on x̂_j − x̂_i (module docstring of robust.py)
            fresh = {j: pub.copies[j] for j in mixed}
            step = robust_step(pub.own, fresh, self.weights, self.robust)
        else:
            step = torch.zeros_like(x)
            for j in mixed:
                step.add_(pub.copies[j] - pub.own, alpha=self.weights[j])
        base = x if self.memory else pub.own.clone()
        return base.add_(step, alpha=self.gamma)

    def catchup(self, x: torch.Tensor, peer) -> Packet:
        """Our model, and our copy of ``peer``'s public copy x̂_peer when it is current:
        a restarted node gets back the x̂ its neighbours hold, so no resync is needed.
        The copy is cloned: the next update moves x̂_peer in place, and the frame may
        still wait in ZeroMQ's queue (zero-copy) or an emulated link then."""
        packet = dense_packet(x)
        copy = self.public.copies.get(peer)
        if copy is not None and peer not in self.public.stale:
            extra = dense_packet(copy.clone())
            packet.frames += extra.frames
            packet.shapes += extra.shapes
            packet.dtypes += extra.dtypes
        return packet

    def read_catchup(self, packet: Packet) -> tuple:
        """(the neighbour's model, its copy of our public copy x̂_i, or None)."""
        frames = list(packet.frames)
        if len(frames) not in (1, 2) or packet.codec != "none" or \
                packet.dtypes != ["float32"] * len(frames):
            raise ValueError("catch-up packet must hold one or two float32 vectors")
        tensors = [dense_tensor(Packet("none", [f], [[self.numel]], ["float32"]), self.numel)
                   for f in frames]
        return tensors[0], (tensors[1] if len(tensors) == 2 else None)

    def rejoin(self, packet: Packet) -> torch.Tensor:
        model, copy = self.read_catchup(packet)
        if copy is not None:
            self.public.own = copy
        return model

    def rejoin_robust(self, x: torch.Tensor, answers: dict,
                      weights: dict | None = None) -> torch.Tensor:
        """Honest neighbours hold the same copy of x̂_i (each applied every q_i we sent):
        it is taken where more than half the answers hold it bit for bit, and our own
        kept otherwise (a per-coordinate median of two answers was the lower value, a
        liar's wherever it sent less, and the offset from the neighbours' copies never
        went away)."""
        copies = [copy for _, copy in answers.values() if copy is not None]
        for copy in copies:
            if 2 * sum(torch.equal(copy, other) for other in copies) > len(answers):
                self.public.own = copy
                break
        return super().rejoin_robust(x, answers, weights)

    def restarted(self) -> None:
        """The copies x̂_j start from x0, far behind their owners: until each owner's
        full copy comes (a resync, asked for), it is left out of the consensus step,
        which would pull the model back towards x0 all the while.  So too when the node
        comes back from offline (:meth:`came_back`): then the copies are neither mixed
        nor handed out in a catch-up until resynchronised."""
        self.public.stale.update(self.public.copies)

    def resync_requests(self, rnd: int) -> list:
        return self.public.resync_requests(rnd)

    def on_resync_request(self, peer) -> None:
        if peer in self.public.copies:
            self.public.asked_by.add(peer)
