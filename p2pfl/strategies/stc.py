"""Sparse Ternary Compression, up and down (Sattler et al., IEEE TNNLS 2020).

ALGORITHMS.md, "Sparse Ternary Compression":

* client:  A ← A + ΔW;  ΔW̃ = STC_p_up(A);  A ← A − ΔW̃      (ErrorFeedback owns A)
* server:  ΔW = mean_i ΔW̃_i;  A_s ← A_s + ΔW;  ΔW̃ = STC_p_down(A_s);  A_s ← A_s − ΔW̃;
           W ← W + ΔW̃

STC is applied to the flat parameter vector (k = ⌈p·n⌉ over all n
parameters), with Golomb-coded positions: the codec ``--compression``
(default ``stc:0.01+golomb``) upstream and ``--compression-down`` (default:
the same) downstream.  The mean is weighted by data size, as in FedAvg.

Update caching: the server keeps the encoded blobs of its last
``--stc-cache`` (default 10) global updates.  A participant that last
synchronised τ rounds ago receives those τ compressed updates in one message
and adds them in order (so its model equals the server's bit for bit); one
that missed more than the cache holds receives the full model (raw float32).

Temporal contexts upstream (``--compression ...+cabac:temporal``): the server
decodes each worker's update against that worker's previous one
(:mod:`p2pfl.compression.temporal`).  Every instruction says, in ``meta["ack"]``,
the round of the last update the server decoded from that worker (0: none).
A worker whose last reply is not the one acknowledged -- it was late, lost or
undecodable, or the coordinator restarted from a checkpoint, which does not keep
the references -- codes its next update with plain contexts, which restarts the
chain.  The downstream stays plain (``STCOptions``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..compression import make_codec, uses_temporal
from ..compression.feedback import codec_state, restore_codec
from .base import Packet, Strategy, dense_packet, dense_tensor, model_from_state
from .fedavg import FedAvgClient, fedavg_step
from .filter_scaling import (SCALE_STEPS, apply_scales, filter_layout, quantise_scales,
                             read_scales, scaled_parameters, scales_frame)
from .robust import parse_aggregator

__all__ = ["STC", "STCClient", "catch_up_packet", "read_catch_up"]


def catch_up_packet(codec: str, blobs: list) -> Packet:
    """One packet carrying several encoded updates (each a list of frames)."""
    frames = [f for blob in blobs for f in blob]
    return Packet(codec, frames, meta={"nf": [len(b) for b in blobs]})


def read_catch_up(packet: Packet) -> list:
    """The blobs of a :func:`catch_up_packet`; ValueError if the counts do not add up."""
    counts = packet.meta.get("nf")
    if (not isinstance(counts, list) or not all(isinstance(c, int) and c > 0 for c in counts)
            or sum(counts) != len(packet.frames)):
        raise ValueError("bad catch-up frame counts")
    blobs, i = [], 0
    for c in counts:
        blobs.append(packet.frames[i:i + c])
        i += c
    return blobs


class STC(Strategy):
    """Server: sparse ternary global updates, a server residual and an update cache."""

    name = "stc"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options
        self.model = ctx.init.clone()  # W
        self.up_spec, self.down_spec = o.codec_up, o.codec_down
        self.up = make_codec(self.up_spec, shapes=ctx.shapes)  # decoder only
        self.layout = filter_layout(ctx.shapes) if o.filter_scaling else None
        self.down = make_codec(self.down_spec, error_feedback=o.error_feedback_down,
                               shapes=ctx.shapes)  # owns A_s
        self.cache_len = int(o.cache)
        self.cache: OrderedDict = OrderedDict()  # round -> encoded global update ΔW̃
        self.synced = {w: 0 for w in ctx.workers}  # round of the model each worker holds
        self.round = 0  # the last aggregated round; W is W_round
        self.aggregator = parse_aggregator(o.aggregator)  # --aggregator (robust.py)
        self.temporal_up = uses_temporal(self.up_spec)
        self.heard: dict = {}  # worker -> round of its last update decoded (temporal chains)

    def _instruction(self, worker: int) -> Packet:
        missed = list(range(self.synced[worker] + 1, self.round + 1))
        self.synced[worker] = self.round
        if all(r in self.cache for r in missed):
            packet = catch_up_packet(self.down.name, [self.cache[r] for r in missed])
        else:
            packet = dense_packet(self.model)  # missed more than the cache holds
        if self.temporal_up:
            packet.meta["ack"] = self.heard.get(worker, 0)
        return packet

    def configure(self, rnd: int, participants: list) -> dict:
        return {w: self._instruction(w) for w in participants}

    def decode(self, worker: int, packet: Packet) -> torch.Tensor:
        if packet.codec != self.up.name:
            raise ValueError(f"expected codec {self.up.name!r}, got {packet.codec!r}")
        scaled = packet.meta.get("fs") is True  # --filter-scaling: the last frame
        if scaled != (self.layout is not None) or (scaled and not packet.frames):
            raise ValueError("filter scales missing, or sent to a server without them")
        out = self.up.decode(packet.frames[:-1] if scaled else packet.frames,
                             worker).reshape(-1)
        if out.numel() != self.model.numel():
            raise ValueError(f"update of {out.numel()} entries, expected {self.model.numel()}")
        if self.temporal_up:
            self.heard[worker] = packet.round  # its next update may refer to this one
        if scaled:
            scales = read_scales(packet.frames[-1], self.layout)
            out = apply_scales(self.model, out, scales, self.layout)
        return out

    def aggregate(self, rnd: int, replies: list) -> None:
        mean = fedavg_step(torch.zeros_like(self.model), replies, self.aggregator)  # ΔW
        frames, sent = self.down.encode_with_reconstruction(mean)  # ΔW̃ = STC_down(A_s)
        self.model = self.model + sent
        self.cache[rnd] = [bytes(memoryview(f).cast("B")) for f in frames]
        while len(self.cache) > self.cache_len:
            self.cache.popitem(last=False)
        self.round = rnd

    def evaluate(self, rnd: int) -> dict:
        loss, acc = self.ctx.evaluate(self.model, 0)
        return {"global_accuracy": acc, "global_loss": loss}

    def finalize(self, worker: int) -> Packet:
        return self._instruction(worker)

    def state(self) -> dict:
        """W, the downstream codec (A_s when error feedback is on, its generator),
        the update cache as ``[[round, [frame bytes]], ...]`` (oldest first),
        each worker's synced round and the last aggregated round.  Temporal
        references are not kept: after a restore every worker's chain restarts
        (its next acknowledgement is 0)."""
        return {"strategy": self.name, "model": self.model.clone(),
                "down": codec_state(self.down), "round": self.round,
                "cache": [[r, list(blob)] for r, blob in self.cache.items()],
                "synced": dict(self.synced), "aggregate_last": self.aggregator.last}

    def restore(self, state: dict) -> None:
        model, down, rnd, cache, synced = self._state_fields(
            state, "model", "down", "round", "cache", "synced")
        if set(synced) != set(self.synced):
            raise ValueError(f"checkpoint of workers {sorted(synced)}, "
                             f"this run has {sorted(self.synced)}")
        if not all(isinstance(f, bytes) for _, blob in cache for f in blob):
            raise ValueError("checkpoint STC cache should hold frames as bytes")
        restore_codec(self.down, down)
        self.model = model_from_state(model, self.ctx.init)
        self.round = int(rnd)
        self.cache = OrderedDict((int(r), list(blob)) for r, blob in cache)
        self.synced = {int(w): int(r) for w, r in synced.items()}
        last = state.get("aggregate_last")
        self.aggregator.last = None if last is None else model_from_state(last, self.ctx.init)


class STCClient(FedAvgClient):
    """Worker: keeps W in sync from compressed global updates; sends STC(A + ΔW)."""

    name = "stc"

    def __init__(self, learner, options, learn) -> None:
        super().__init__(learner, options, learn)
        shapes = getattr(learner, "shapes", None)  # None: one flat tensor
        self.up = make_codec(options.codec_up, error_feedback=options.error_feedback_up,
                             shapes=shapes)
        self.down = make_codec(options.codec_down, shapes=shapes)
        self.base = learner.get_flat()  # W_0: every node builds the same initial model
        self.layout = filter_layout(shapes) if options.filter_scaling else None
        self.temporal_up = uses_temporal(options.codec_up)
        self.replied = 0  # the round of our last update (temporal chains; 0: none yet)

    def apply(self, rnd: int, packet: Packet) -> None:
        if self.temporal_up and self.replied and packet.meta.get("ack") != self.replied:
            self.up.restart()  # the server lacks our last update: plain contexts next
        if packet.codec == "none":
            self.base = dense_tensor(packet, self.learner.num_params)
        else:
            for blob in read_catch_up(packet):
                self.base = self.base + self.down.decode(blob).reshape(-1)
        self.learner.set_flat(self.base)

    def reply(self, rnd: int) -> Packet:
        self.replied = rnd
        if self.layout is None:
            frames = self.up.encode(self.update())  # A ← A + ΔW; send STC(A); A ← A − sent
            return Packet(self.up.name, frames, meta={"n": self.learner.num_samples})
        # ũ = STC(A + ΔW) and A ← A + ΔW − ũ, as without scales; then the scales are
        # trained on W + ũ with the weights frozen (filter_scaling.py)
        frames, sent = self.up.encode_with_reconstruction(self.update())
        self.learner.set_flat(self.base + sent)
        scales = quantise_scales(self.learner.train_scales(
            scaled_parameters(self.learner.shapes), SCALE_STEPS, self.learner.spec.lr))
        self.learner.set_flat(self.base)
        return Packet(self.up.name, [*frames, scales_frame(scales)],
                      meta={"n": self.learner.num_samples, "fs": True})

