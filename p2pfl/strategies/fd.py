"""Federated distillation FD and compressed FD, CFD (Sattler et al., IEEE TNSE 2021).

ALGORITHMS.md, "Federated distillation FD and compressed FD".  The public
unlabelled set X_pub is a held-out slice of the training set
(``--public-size``, default 200 samples, in no worker's shard).  Per round a
participant distils from the last aggregate it received, trains on its own
data, and sends its soft labels on X_pub; the server averages them and sends
the average back.  Workers keep their own models (their architectures may
differ: ``model`` in a node profile).  The server keeps no model and does not
distil (ALGORITHMS.md has the server distil too): it only aggregates.  Its
records carry the ensemble's accuracy on X_pub (the argmax of the averaged soft
labels), and the workers' records their own models' accuracy.

CFD quantises soft labels to b bits (``--fd-bits``; default 1 for ``cfd``, 0
= float32 for ``fd``):

    Q_b(p): round p·L to integers, L = 2^b − 1, then repair each row's sum to L
            by moving the largest rounding errors;  Q_1 = one-hot argmax

and delta-codes them (``--fd-delta``, on for ``cfd``): only rows that changed
since the previous message are sent, with a bitmap of the changed rows.
Downstream the server sends Q_b(mean_i Q_b(p_i)) the same way.  Each side
codes against the last round the other *confirmed* (a reply received, with
the round it holds), and keeps both references the other may still use: the
confirmed one, in case its reply is lost, and the newest.

The frames are coded by ``--fd-coder`` (``softlabels.py``): ``packed`` (the
default; for b = 1 the argmax indices as one base-C integer, ⌈m·log2 C⌉ bits,
for b > 1 each level in b bits, after a changed-row bitmap if delta), ``cabac``,
or ``cabac:temporal``, whose deltas condition CABAC's contexts on the reference.
Defaults: 5 distillation steps per round (``--distill-steps``), batch as
``--batch-size``.
"""

from __future__ import annotations

import numpy as np

from ..learner import public_indices, shared_dataset
from ..training import soft_labels
from .base import ClientStrategy, Packet, Strategy, round_field
from .softlabels import (decode_labels, dequantise, encode_labels, label_packet, pack_rows,
                         quantise, read_label_packet, unpack_rows)

__all__ = ["FD", "FDClient", "quantise", "dequantise", "encode_labels", "decode_labels",
           "pack_rows", "unpack_rows"]


#: How far a float32 soft-label row may sum from 1 (a softmax's rounding is ~1e-7).
ROW_SUM_TOLERANCE = 1e-3


def probabilities(labels: np.ndarray) -> bool:
    """Whether every row is a probability vector: entries in [0, 1], summing to 1.
    (|p| <= 1 alone let a worker send −1 for a row's class: twice a row's pull.)"""
    sums = labels.sum(1, dtype=np.float64)
    return bool(labels.min(initial=0.0) >= 0.0 and labels.max(initial=0.0) <= 1.0
                and np.abs(sums - 1.0).max(initial=0.0) <= ROW_SUM_TOLERANCE)


def _public(learn, size: int):
    ds = shared_dataset(learn.dataset, learn.seed, learn.data_dir)
    idx = public_indices(learn, size)
    return idx, ds.x_train[idx], ds.y_train[idx], ds.num_classes


# ------------------------------------------------------------------- server
class FD(Strategy):
    """Server: averages the soft labels and sends the (quantised) average back."""

    name = "fd"
    reply_kind = "softlabels"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        o = ctx.options
        self.bits, self.delta = int(o.bits), bool(o.delta) and o.bits > 0
        self.coder = o.coder
        _, _, self.y_pub, self.classes = _public(ctx.learn, o.public_size)  # evaluation only
        self.m = len(self.y_pub)
        self.held: dict = {}  # worker -> (round, labels) last received from it
        self.sent: dict = {}  # round -> aggregate as sent (levels or float32)
        self.agg_round = 0
        self.client_has: dict = {}  # worker -> aggregate round it reported holding
        self.ensemble = None

    def _agg_packet(self, worker: int, meta: dict) -> Packet:
        if not self.agg_round:
            return Packet("none", [], meta=meta)
        ref = self.client_has.get(worker, 0)
        previous = self.sent.get(ref) if (self.delta and ref and ref != self.agg_round) else None
        meta = dict(meta, agg=self.agg_round, ref=ref if previous is not None else 0)
        return label_packet(self.sent[self.agg_round], self.bits, previous, meta, self.coder)

    def configure(self, rnd: int, participants: list) -> dict:
        return {w: self._agg_packet(w, {"base": self.held.get(w, (0, None))[0]})
                for w in participants}

    def decode(self, worker: int, packet: Packet):
        base = packet.meta.get("base", 0)
        previous = None
        if base:
            held = self.held.get(worker)
            if held is None or held[0] != base:
                raise ValueError(f"delta against round {base}, which is not held")
            previous = held[1]
        labels = read_label_packet(packet, self.m, self.classes, self.bits, previous)
        if not np.isfinite(labels).all():
            raise ValueError("non-finite soft labels")
        if self.bits == 0 and not probabilities(labels):
            # raw float32 must be probabilities (quantised ones are levels, checked as
            # decoded): 3e38 from two workers overflowed the ensemble sent to every worker
            raise ValueError("float32 soft labels must be probabilities")
        return labels

    def aggregate(self, rnd: int, replies: list) -> None:
        ok = [r for r in replies if r.ok]
        for r in replies:
            if r.ok:
                self.held[r.worker] = (rnd, r.content)
            if isinstance(r.meta.get("have"), int):
                self.client_has[r.worker] = r.meta["have"]
        if not ok:
            return
        probs = [r.content if self.bits == 0 else dequantise(r.content, self.bits) for r in ok]
        self.ensemble = np.mean(probs, axis=0).astype(np.float32)  # mean_i p_i
        self.sent[rnd] = self.ensemble if self.bits == 0 else quantise(self.ensemble, self.bits)
        self.agg_round = rnd
        keep = set(self.client_has.values()) | {rnd}
        self.sent = {r: v for r, v in self.sent.items() if r in keep}

    def summary(self) -> dict:
        """The soft-label settings, resolved (cfd's defaults included)."""
        return {"fd_bits": self.bits, "fd_delta": self.delta, "fd_coder": self.coder}

    def evaluate(self, rnd: int) -> dict:
        if self.ensemble is None:
            return {}
        return {"ensemble_accuracy": float((self.ensemble.argmax(1) == self.y_pub).mean())}

    def finalize(self, worker: int) -> Packet:
        return self._agg_packet(worker, {})

    def state(self) -> dict:
        """What each worker last sent (``held``), the aggregates still referenced
        (``sent``), the latest aggregate's round, the rounds the workers hold and
        the float32 ensemble (copies; the public set comes from the context)."""
        return {"strategy": self.name, "bits": self.bits, "delta": self.delta,
                "held": {w: (r, v.copy()) for w, (r, v) in self.held.items()},
                "sent": {r: v.copy() for r, v in self.sent.items()},
                "agg_round": self.agg_round, "client_has": dict(self.client_has),
                "ensemble": None if self.ensemble is None else self.ensemble.copy()}

    def restore(self, state: dict) -> None:
        bits, delta, held, sent, agg, has, ens = self._state_fields(
            state, "bits", "delta", "held", "sent", "agg_round", "client_has", "ensemble")
        if (bits, delta) != (self.bits, self.delta):
            raise ValueError(f"checkpoint of soft labels with bits={bits}, delta={delta}; "
                             f"this run has bits={self.bits}, delta={self.delta}")
        if not all(isinstance(v, (list, tuple)) and len(v) == 2 for v in held.values()):
            raise ValueError("checkpoint held labels should be [round, labels] pairs")
        self.held = {int(w): (int(r), self._labels(v)) for w, (r, v) in held.items()}
        self.sent = {int(r): self._labels(v) for r, v in sent.items()}
        self.agg_round = int(agg)
        self.client_has = {int(w): int(r) for w, r in has.items()}
        if self.agg_round and self.agg_round not in self.sent:
            raise ValueError(f"checkpoint aggregate of round {agg} is not among those kept")
        if not set(self.held) | set(self.client_has) <= set(self.ctx.workers):
            raise ValueError("checkpoint labels of workers this run does not have")
        self.ensemble = None if ens is None else self._labels(ens, np.float32)

    def _labels(self, value, dtype=None) -> np.ndarray:
        """A checkpointed label matrix, checked against the public set (a copy)."""
        dtype = dtype or (np.float32 if self.bits == 0 else np.uint8)
        if (not isinstance(value, np.ndarray) or value.dtype != dtype
                or value.shape != (self.m, self.classes)):
            raise ValueError(f"checkpoint soft labels should be {np.dtype(dtype).name} of shape "
                             f"{(self.m, self.classes)}")
        return value.copy()


class FDClient(ClientStrategy):
    """Worker: distil from the aggregate, train locally, send soft labels on X_pub."""

    name = "fd"
    reply_kind = "softlabels"

    def __init__(self, learner, options, learn) -> None:
        idx, self.x_pub, _, self.classes = _public(learn, options.public_size)
        learner.drop_samples(idx)  # the public set is in no worker's shard
        super().__init__(learner, options, learn)
        self.bits = int(options.bits)
        self.delta = bool(options.delta) and self.bits > 0
        self.coder = options.coder
        self.steps = int(options.distill_steps)
        # delta references: what the server may still code against, by round
        self.agg = None  # (round, aggregate as received): the latest
        self.refs: dict = {}  # round -> aggregate, the ones the server may reference
        self.sent: dict = {}  # round -> labels as sent, the ones the server may hold
        self.base = 0  # the round of our labels the server holds
        self.missed = 0  # aggregates skipped for want of their reference

    def apply(self, rnd: int, packet: Packet) -> None:
        """Decode the aggregate (delta against ``meta["ref"]``) and distil from it.

        The server codes against the round we last *confirmed* holding (our
        last reply it received).  If this round's reply is lost it will code
        against ``ref`` again, else against the aggregate decoded now: those
        two are the references kept.  A delta whose reference we lack (never
        the case when both sides follow this rule) is skipped, not fatal: our
        next reply's ``have`` makes the server re-base on what we hold.
        """
        meta = packet.meta
        self.base, ref, agg = (round_field(meta, key, 1 << 40, default, least=-1)
                               for key, default in (("base", 0), ("ref", 0), ("agg", rnd)))
        if not packet.frames:
            return
        previous = self.refs.get(ref) if ref else None
        if ref and previous is None:
            self.missed += 1
            return
        labels = read_label_packet(packet, len(self.x_pub), self.classes, self.bits, previous)
        self.agg = (agg, labels)
        self.refs = _keep((ref, previous), self.agg)
        targets = labels if self.bits == 0 else dequantise(labels, self.bits)
        if self.steps:
            self.learner.distill(self.x_pub, targets, self.steps)

    def reply(self, rnd: int) -> Packet:
        probs = soft_labels(self.learner.model, self.x_pub)
        if self.behaviour in ("random", "noisy"):
            noise = self.rng.dirichlet(np.ones(self.classes), len(probs)).astype(np.float32)
            probs = noise if self.behaviour == "random" else (probs + noise) / 2
        labels = probs if self.bits == 0 else quantise(probs, self.bits)
        previous = self.sent.get(self.base) if (self.delta and self.base) else None
        meta = {"n": self.learner.num_samples, "have": self.agg[0] if self.agg else 0,
                "base": self.base if previous is not None else 0}
        packet = label_packet(labels, self.bits, previous, meta, self.coder)
        # the server's next base: ``base`` if this reply is lost, else this round
        self.sent = _keep((self.base, previous), (rnd, labels)) if self.delta else {}
        return packet


def _keep(*pairs) -> dict:
    """``{round: labels}`` of the (round, labels) pairs that hold labels."""
    return {int(r): v for r, v in pairs if r and v is not None}
