"""Federated averaging (ALGORITHMS.md, "Communication delay / local SGD").

Each round the participants (a ``--participation`` fraction, drawn at random)
receive the global model W, run the local SGD steps or epochs, and send their
update ΔW_i = W_i − W: raw float32, or coded with ``--compression`` (per tensor,
error feedback unless ``--error-feedback off``, filter scales with
``--filter-scaling on``, temporal contexts with ``cabac:temporal``; see
:mod:`.upstream`).  The server sets

    W ← W + Σ_i n_i ΔW_i / Σ_i n_i         (n_i: client i's data size)

Defaults (from RunConfig): 10 local steps of batch 32, lr 0.05, momentum 0.9.
A missing or unreadable reply is left out of the average.  ``--aggregator``
replaces the mean by a Byzantine-robust rule (:mod:`.robust`).
"""

from __future__ import annotations

import dataclasses

import torch

from .base import ClientStrategy, Packet, Strategy, behave, dense_packet, dense_tensor, \
    model_from_state, weighted_mean
from .robust import parse_aggregator
from .upstream import UpDecoder, UpEncoder

__all__ = ["FedAvg", "FedAvgClient", "fedavg_step"]


def fedavg_step(model: torch.Tensor, replies: list, aggregate=None) -> torch.Tensor:
    """W + the aggregate of the successful replies' updates: by default their
    data-size weighted mean; ``aggregate`` (a :class:`~.robust.Aggregator`) may be
    a robust rule instead (``--aggregator``)."""
    ok = [r for r in replies if r.ok]
    if not ok:
        return model.clone()
    combine = aggregate or weighted_mean
    return model + combine([r.content for r in ok], [r.num_samples for r in ok])


class FedAvg(Strategy):
    """Server: one global model, sent in full to every participant."""

    name = "fedavg"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.model = ctx.init.clone()  # W
        self.aggregator = parse_aggregator(ctx.options.aggregator)
        o = ctx.options
        spec = getattr(o, "codec_up", "none")  # CFL's options have no codec
        self.up = None if spec == "none" else \
            UpDecoder(spec, ctx.shapes, getattr(o, "filter_scaling", False))

    def configure(self, rnd: int, participants: list) -> dict:
        packet = dense_packet(self.model)
        if self.up is None:
            return {w: packet for w in participants}
        return {w: self.up.acknowledge(w, dataclasses.replace(packet, meta={}))
                for w in participants}  # the same frames, each its own acknowledgement

    def decode(self, worker: int, packet: Packet) -> torch.Tensor:
        if self.up is None:
            return dense_tensor(packet, self.model.numel())
        return self.up.decode(worker, packet, self.model)

    def aggregate(self, rnd: int, replies: list) -> None:
        self.model = fedavg_step(self.model, replies, self.aggregator)

    def evaluate(self, rnd: int) -> dict:
        loss, acc = self.ctx.evaluate(self.model, 0)
        return {"global_accuracy": acc, "global_loss": loss}

    def finalize(self, worker: int) -> Packet:
        return dense_packet(self.model)

    def state(self) -> dict:
        """The global model W (and centred clipping's last aggregate)."""
        return {"strategy": self.name, "model": self.model.clone(),
                "aggregate_last": self.aggregator.last}

    def restore(self, state: dict) -> None:
        (model,) = self._state_fields(state, "model")
        self.model = model_from_state(model, self.ctx.init)
        last = state.get("aggregate_last")
        self.aggregator.last = None if last is None else model_from_state(last, self.ctx.init)


#: Honest updates an ``alie`` worker computes to estimate the mean and spread.
ALIE_PROBES = 5


class FedAvgClient(ClientStrategy):
    """Worker: load W, train, send ΔW = W_local − W (as its behaviour dictates)."""

    name = "fedavg"

    def __init__(self, learner, options, learn) -> None:
        super().__init__(learner, options, learn)
        spec = getattr(options, "codec_up", "none")  # CFL's options have no codec
        self.up = None if spec == "none" else UpEncoder(
            spec, options.error_feedback_up, getattr(learner, "shapes", None),
            options.filter_scaling)

    def apply(self, rnd: int, packet: Packet) -> None:
        if self.up is not None:
            self.up.instruction(packet)  # temporal chains: restart if our last update was lost
        self.base = dense_tensor(packet, self.learner.num_params)
        self.learner.set_flat(self.base)

    def update(self) -> torch.Tensor:
        """This round's update ΔW after ``fit``, shaped by the behaviour; the
        learner is set back to the received model."""
        delta = self.learner.get_flat() - self.base
        if self.behaviour == "alie":
            delta = self._alie(delta)
        self.learner.set_flat(self.base)
        return behave(delta, self.behaviour, self.rng)

    def _alie(self, first: torch.Tensor) -> torch.Tensor:
        """"A little is enough" (Baruch et al., NeurIPS 2019) without seeing anyone
        else's update: per coordinate μ − z·σ of :data:`ALIE_PROBES` honest updates
        this worker computes from W on fresh mini-batches of its own data, with
        z = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − f, for the run's n workers of which f
        collude (``LearnSpec.colluders``)."""
        probes = [first]
        for _ in range(ALIE_PROBES - 1):
            self.learner.set_flat(self.base)
            self.fit()
            probes.append(self.learner.get_flat() - self.base)
        stack = torch.stack(probes)
        return stack.mean(0) - self.alie_z * stack.std(0)

    def reply(self, rnd: int) -> Packet:
        if self.up is not None:
            return self.up.packet(rnd, self.update(), self.learner, self.base)
        packet = dense_packet(self.update())
        packet.meta = {"n": self.learner.num_samples}
        return packet

