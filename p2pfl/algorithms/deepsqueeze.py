"""DeepSqueeze: gossip of compressed, error-compensated models.

Tang, Lian, Yu, Zhang, Liu, "DeepSqueeze: Decentralization meets
error-compensated compression" (2019); ALGORITHMS.md, "Peer-to-peer gossip",
DeepSqueeze.  At node i, after the local SGD steps::

    v = x_i + e_i;   c_i = Q(v);   e_i = v − c_i;   send c_i to the neighbours
    x_i ← x_i + γ Σ_j (w_ij − 1[i=j]) c_j  =  x_i + γ Σ_{j≠i} w_ij (c_j − c_i)

(the two sums are equal because the row of W sums to 1).  Unlike CHOCO-SGD, a
node keeps no copies of its neighbours' models: each message is a compressed
model, not a change of a public copy, so a lost message costs one round's term
and no copy needs resynchronising.  The error e_i is the only memory; with
``--error-feedback off`` it is dropped (e_i = 0).  A neighbour whose message did
not come, or is unusable, leaves its term out: its weight stays with c_i, and the
row still sums to 1.  In asynchronous gossip the latest c_j of each neighbour
counts.  With ``cabac:temporal`` the next message refers to the lost one and cannot
be decoded either: its receiver asks the sender to code its next one with plain
contexts, which restarts the chain (two rounds of the term lost, not one).

The plan takes deterministic quantisers only (fp16, bf16, quant, dq, uniform:
``plan_rules.whole_model_codec``), a choice of ours.  A sparsifier or low-rank codec keeps a
small part of a whole model, and its error grows until the models are not finite (14
of 16 nodes failed so with ``randk:0.05`` in 100 rounds, 15 with ``powersgd:2`` in 60).
``qsgd:16`` made every node's model non-finite unscaled, and, scaled by 1/(1 + ω) as
CHOCO's copies are, some nodes' at γ 0.1 and 0.4; ``sign`` at γ 0.05, 0.1 and 0.4
(``benchmarks/deepsqueeze.py --gammas``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compression.temporal import TemporalGap
from .base import GossipAlgorithm, Packet
from .decoders import Decoders
from .options import check_gamma

__all__ = ["DeepSqueeze", "DeepSqueezeOptions"]


@dataclass(frozen=True)
class DeepSqueezeOptions:
    """The codec Q of the models sent, the consensus step ``gamma`` and whether the
    compression error e is carried to the next round (``error_feedback``)."""

    codec: str = "none"
    gamma: float = 1.0
    error_feedback: bool = True

    def __post_init__(self) -> None:
        check_gamma(self.gamma)


class DeepSqueeze(GossipAlgorithm):
    """DeepSqueeze over flat parameter vectors."""

    name = "deepsqueeze"
    Options = DeepSqueezeOptions
    pure_mix = True  # mix reads x and returns a new tensor
    _seen: tuple = ()  # the neighbours' models last mixed (an ALIE attacker's view)

    def __init__(self, numel, self_weight, weights, *, x0=None, options=None, seed=None,
                 shapes=None, peer_codecs=None) -> None:
        super().__init__(numel, self_weight, weights, x0=x0, options=options, seed=seed,
                         shapes=shapes, peer_codecs=peer_codecs)
        from ..compression import make_codec

        self.options = options = options or DeepSqueezeOptions()
        self.codec = make_codec(options.codec, seed=seed, max_numel=numel, shapes=shapes)
        self.decoders = Decoders(self.codec, numel, self.peer_codecs)
        self.error = torch.zeros(numel)  # e_i
        self.sent: torch.Tensor | None = None  # c_i of the last outgoing()
        self.gaps: set = set()  # neighbours whose temporal chain we lost

    def outgoing(self, x: torch.Tensor) -> Packet:
        v = x + self.error if self.options.error_feedback else x.clone()
        frames, c = self.codec.encode_with_reconstruction(v)
        self.sent = c.reshape(-1).to(torch.float32)
        if self.options.error_feedback:
            self.error = v.sub_(self.sent)  # e_i = v − c_i (v is ours: reused)
        return Packet(self.codec.name, frames)

    def decode(self, packet: Packet) -> torch.Tensor:
        """A neighbour's c_j.  Values beyond :data:`~.base.MAX_MAGNITUDE` (or not finite) are
        refused: they would overflow the consensus step."""
        try:
            return self.decoders.read(packet, "model")
        except TemporalGap:  # we lost its last message: ask it to restart its chain
            self.gaps.add(packet.sender)
            raise

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        """x_i + γ Σ_j w_ij (c_j − c_i) over the neighbours whose c_j arrived, in a
        fixed order (float sums do not depend on arrival).  c_i is this round's; a
        round that sent nothing (a silent node) uses x_i."""
        own, self.sent = (self.sent if self.sent is not None else x), None
        if self.observe_neighbours:  # an ALIE attacker's view (attacks.corrupt)
            self._seen = tuple(received.values())
        step = torch.zeros_like(x)
        for j in sorted(received, key=str):
            step.add_(received[j] - own, alpha=self.weights[j])
        return x + self.options.gamma * step

    def neighbour_models(self) -> list:
        """The neighbours' c_j of the last mix, kept only for an ALIE attacker."""
        return list(self._seen)

    def resync_requests(self, rnd: int) -> list:
        """Neighbours whose ``cabac:temporal`` chain we lost: they are asked to send
        their next message with plain contexts (asked again after each gap)."""
        due, self.gaps = sorted(self.gaps, key=str), set()
        return due

    def on_resync_request(self, peer) -> None:
        """Called before this round's :meth:`outgoing`, which every neighbour can then
        decode: a lost message costs its receiver two rounds of the sender's term."""
        self.codec.restart()

    def restarted(self) -> None:
        """A new process: the error of the one that died is lost; start without one."""
        self.error = torch.zeros(self.numel)

