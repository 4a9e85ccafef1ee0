"""Gossip learning: push the model to one random neighbour, merge by age.

Ormándi, Hegedűs, Jelasity (CCPE 2013); Hegedűs, Danner, Jelasity (DAIS 2019,
JPDC 2021); ALGORITHMS.md, "Asynchronous gossip and gossip learning".  Each
time a node wakes up (here: after each local iteration) it sends its model w
and its age a to one random neighbour.  A receiver merges every model that
arrived, in arrival order, before its next local step::

    w ← (a_r·w_r + a_l·w_l) / (a_r + a_l);   a ← max(a_r, a_l)
    w ← SGD step(s) on local data;           a ← a + steps

The age counts the SGD steps a model has seen, so an old, well-trained model
outweighs a young one.  This is the merge-then-update variant; it runs
asynchronously (the plan sets ``--schedule async`` for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import GossipAlgorithm, Packet, dense_packet, dense_tensor

__all__ = ["GossipLearning", "GossipLearningOptions", "MAX_AGE"]

#: The largest age a packet may carry (ages count local steps; floats are exact to here).
MAX_AGE = float(2 ** 53)


@dataclass(frozen=True)
class GossipLearningOptions:
    """``steps``: SGD steps a local iteration adds to the model's age."""

    steps: int = 1


class GossipLearning(GossipAlgorithm):
    """Push to one random neighbour; merge each arrival weighted by model age."""

    name = "gossip-learning"
    Options = GossipLearningOptions

    def __init__(self, numel, self_weight, weights, *, x0=None, options=None, seed=None,
                 shapes=None, peer_codecs=None):
        super().__init__(numel, self_weight, weights, x0=x0, options=options, seed=seed,
                         shapes=shapes, peer_codecs=peer_codecs)
        self.age = 0.0
        self.rng = np.random.default_rng(seed)

    def outgoing(self, x: torch.Tensor) -> Packet:
        self.age += self.options.steps  # the local step that came before this send
        packet = dense_packet(x)
        packet.meta["age"] = self.age
        return packet

    def targets(self, online: list) -> list:
        """One random neighbour among those believed online."""
        pool = online or sorted(self.weights)
        return [pool[int(self.rng.integers(len(pool)))]] if pool else []

    def catchup(self, x: torch.Tensor, peer) -> Packet:
        packet = dense_packet(x)
        packet.meta["age"] = self.age
        return packet

    def rejoin(self, packet: Packet) -> torch.Tensor:
        """Continue from the neighbour's model, and take its age."""
        x, self.age = self.decode(packet)
        return x

    def decode(self, packet: Packet):
        age = packet.meta.get("age")
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 <= age <= MAX_AGE:
            raise ValueError("gossip-learning packet without a valid age")  # inf, nan too
        return dense_tensor(packet, self.numel), float(age)

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        return self.mix_async(x, {j: [m] for j, m in received.items()})

    def mix_async(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        """Merge every model that arrived, in order, weighted by age (pure maths)."""
        for j in sorted(received, key=str):
            for model, age in received[j]:
                total = self.age + age
                if total > 0:  # the weights first: a large age times a model overflows
                    x = (self.age / total) * x + (age / total) * model
                self.age = max(self.age, age)
        return x
