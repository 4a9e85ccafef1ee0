"""Sparse Ternary Compression, up and down (Sattler et al., IEEE TNNLS 2020).

ALGORITHMS.md, "Sparse Ternary Compression":

* client:  A ← A + ΔW;  ΔW̃ = STC_p_up(A);  A ← A − ΔW̃      (ErrorFeedback owns A)
* server:  ΔW = mean_i ΔW̃_i;  A_s ← A_s + ΔW;  ΔW̃ = STC_p_down(A_s);  A_s ← A_s − ΔW̃;
           W ← W + ΔW̃

STC is applied per parameter tensor (k = ⌈p·n_l⌉ for a tensor of n_l entries, as
in the paper; ``stc:P:global`` takes one k over the model), with Golomb-coded
positions: the codec ``--compression``
(default ``stc:0.01+golomb``) upstream and ``--compression-down`` (default:
the same) downstream.  The mean is weighted by data size, as in FedAvg.

Update caching: the server keeps the encoded blobs of its last
``--stc-cache`` (default 10) global updates.  A participant that last
synchronised τ rounds ago receives those τ compressed updates in one message
and adds them in order (so its model equals the server's bit for bit); one
that missed more than the cache holds receives the full model (raw float32).

Synchronisation survives faults.  Each instruction says the round of the model
it brings the worker to (``meta["at"]``) and, for a catch-up, the round its
first update applies to (``meta["base"]``).  The worker keeps the round of the
model it holds, skips the updates it applied already (an instruction repeated
by a coordinator restarted from its checkpoint), and replies with that round.
The server takes a worker's round from its replies only, not from the
instructions it sent, so an instruction lost on the way (an offline worker) is
caught up from the round the worker really holds.  A worker that holds an
earlier model than a catch-up starts from (it was restarted, and holds W_0)
trains nothing and says so (``desync``, with its round); the server then sends
it the updates from there, or the full model.

The uplink (the update's codec, temporal contexts and their acknowledgements,
filter scales) is :mod:`.upstream`'s, shared with compressed FedAvg; with
``cabac:temporal`` the downstream stays plain (``STCOptions``).  With
``--filter-scaling on`` each global update also carries the workers' combined
filter scales s̄, and W ← s̄ ⊙ (W + ΔW̃) on both ends (:mod:`.filter_scaling`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..algorithms.base import all_finite
from ..compression import make_codec
from ..compression.feedback import codec_state, restore_codec
from .base import Packet, Strategy, dense_packet, dense_tensor, model_from_state, \
    round_field
from .fedavg import FedAvgClient, fedavg_step
from .filter_scaling import combine_scales, filter_layout, read_scales, scale_filters, \
    scales_frame
from .robust import parse_aggregator
from .upstream import UpDecoder

__all__ = ["STC", "STCClient", "OutOfSync", "catch_up_packet", "read_catch_up"]


class OutOfSync(ValueError):
    """A worker holds an earlier model than its catch-up started from (a reply's error
    code ``desync``): the server sends it the updates from its round next time."""

    code = "desync"


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
        self.up = UpDecoder(self.up_spec, ctx.shapes, o.filter_scaling)
        self.down = make_codec(self.down_spec, error_feedback=o.error_feedback_down,
                               shapes=ctx.shapes)  # owns A_s
        self.cache_len = int(o.cache)
        self.cache: OrderedDict = OrderedDict()  # round -> encoded global update ΔW̃
        self.synced = {w: 0 for w in ctx.workers}  # round of the model each worker holds
        self.round = 0  # the last aggregated round; W is W_round
        self.aggregator = parse_aggregator(o.aggregator)  # --aggregator (robust.py)
        self.layout = filter_layout(ctx.shapes) if o.filter_scaling else None
        self.scales: dict = {}  # worker -> its filter scales this round

    def _instruction(self, worker: int) -> Packet:
        """W_round for ``worker``: the updates since the round its last reply said it
        holds, or the full model.  ``synced`` moves with the replies only."""
        missed = list(range(self.synced[worker] + 1, self.round + 1))
        if all(r in self.cache for r in missed):
            packet = catch_up_packet(self.down.name, [self.cache[r] for r in missed])
            packet.meta["base"] = self.synced[worker]
        else:
            packet = dense_packet(self.model)  # missed more than the cache holds
        packet.meta["at"] = self.round
        return self.up.acknowledge(worker, packet)

    def configure(self, rnd: int, participants: list) -> dict:
        return {w: self._instruction(w) for w in participants}

    def decode(self, worker: int, packet: Packet) -> torch.Tensor:
        self.synced[worker] = round_field(packet.meta, "at", self.round)  # what it holds
        if packet.meta.get("desync") is True:
            raise OutOfSync(f"the worker holds the model of round {self.synced[worker]}, "
                            "earlier than its catch-up started from")
        if self.layout is None:
            return self.up.decode(worker, packet, self.model)
        update, self.scales[worker] = self.up.decode_parts(worker, packet, self.model)
        return update

    def aggregate(self, rnd: int, replies: list) -> None:
        mean = fedavg_step(torch.zeros_like(self.model), replies, self.aggregator)  # ΔW
        frames, sent = self.down.encode_with_reconstruction(mean)  # ΔW̃ = STC_down(A_s)
        self.model = self.model + sent
        if self.layout is not None:  # W ← s̄ ⊙ (W + ΔW̃), s̄ sent with ΔW̃
            ok = [r for r in replies if r.ok and r.worker in self.scales]
            scales = combine_scales([self.scales[r.worker] for r in ok],
                                    [r.num_samples for r in ok],
                                    self.aggregator.name != "mean", self.layout)
            self.model = scale_filters(self.model, scales, self.layout)
            frames = [*frames, scales_frame(scales)]
            self.scales = {}
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
        # self.up, the uplink's encoder, is FedAvgClient's (upstream.py)
        self.down = make_codec(options.codec_down, shapes=shapes)
        self.base = learner.get_flat()  # W_0: every node builds the same initial model
        self.layout = filter_layout(shapes) if options.filter_scaling else None
        self.at = 0  # the round of the global model self.base is
        self.out_of_sync = False  # the last catch-up started after self.at

    def apply(self, rnd: int, packet: Packet) -> None:
        """Bring W to the round the instruction says: the full model, or the catch-up's
        updates this worker lacks; ValueError if the instruction is unusable."""
        self.up.instruction(packet)  # temporal chains: restart if our last update was lost
        at = round_field(packet.meta, "at", 1 << 40)
        # the full model; a catch-up counts its updates' frames (nf), and with a dense
        # downstream (--compression-down none) carries that codec's name too
        if packet.codec == "none" and "nf" not in packet.meta:
            self.base, self.at = dense_tensor(packet, self.learner.num_params), at
            self.out_of_sync = False
        else:
            blobs = read_catch_up(packet)
            start = round_field(packet.meta, "base", at)
            if at != start + len(blobs):
                raise ValueError("a catch-up's rounds do not add up")
            self.out_of_sync = not start <= self.at <= at
            if self.out_of_sync:
                return  # reply() says so; the model stays as it is
            base = self.base
            for blob in blobs[self.at - start:]:  # those applied already are skipped
                if self.layout is None:
                    base = base + self.down.decode(blob).reshape(-1)
                else:  # the global scales s̄ follow the update's frames
                    scales = read_scales(blob[-1], self.layout)
                    base = scale_filters(base + self.down.decode(blob[:-1]).reshape(-1),
                                         scales, self.layout)
            if not all_finite(base):  # a codec's raw floats may carry NaN or inf
                raise ValueError("a global model with NaN or inf")
            self.base, self.at = base, at  # only once every blob has decoded
        self.learner.set_flat(self.base)

    def fit(self) -> float:
        return float("nan") if self.out_of_sync else super().fit()

    def reply(self, rnd: int) -> Packet:
        """The update, with the round of the model it was trained from; out of sync,
        no update, and that round (the server catches up from there)."""
        if self.out_of_sync:
            return Packet(self.up.codec.name, [], meta={
                "n": self.learner.num_samples, "at": self.at, "desync": True})
        packet = super().reply(rnd)
        packet.meta["at"] = self.at
        return packet

