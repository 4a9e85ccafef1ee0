"""Which codecs and options a gossip rule can run with: checks of the plan.

Each raises a :class:`~p2pfl.errors.ConfigError` (one line, exit 2) for a
combination the rule cannot run, before any node starts.
"""

from __future__ import annotations

import math

import numpy as np

from .config import RunConfig
from .errors import ConfigError
from .labels import first_few

__all__ = ["DEEPSQUEEZE_UNSTABLE", "whole_model_codec", "check_time_varying", "check_robust",
           "late_links", "late_round_trips", "check_start_latency", "check_public_size",
           "sparse_median_warning"]


#: Quantisers DeepSqueeze was unstable with on the mnist1d CNN (benchmarks/deepsqueeze.py
#: --gammas): some or all nodes' models went non-finite at some γ in 0.05-0.4.
DEEPSQUEEZE_UNSTABLE = ("qsgd", "terngrad", "sign")


def whole_model_codec(spec: str) -> None:
    """DeepSqueeze compresses whole models, so its codec must keep every entry: a
    sparsifier or low-rank stage leaves most of a model out, and its error grows
    until the models are not finite (randk:0.05 and powersgd:2 on the mnist1d CNN).
    Stochastic and sign quantisers made it unstable as well (DEEPSQUEEZE_UNSTABLE)."""
    from .compression import make_codec

    for st in getattr(make_codec(spec), "stages", ()):
        if st.role == "transform":
            raise ConfigError(f"deepsqueeze sends whole models, compressed: {st.name} keeps "
                              "only part of one; use fp16, bf16, quant, dq or uniform, or "
                              "--algorithm choco for sparse updates")
        if st.name in DEEPSQUEEZE_UNSTABLE:
            raise ConfigError(f"deepsqueeze is unstable with {st.name} (nodes' models went "
                              "non-finite in its benchmark); use fp16, bf16, quant, dq or "
                              "uniform, or --algorithm choco")


def check_time_varying(cfg: RunConfig, sched, algorithm: str, codecs: list,
                        schedule: str) -> None:
    """A schedule hears each neighbour only in its phases: a rule that keeps a copy of
    every neighbour (CHOCO, compressed D-PSGD) or a chain of messages
    (``cabac:temporal``) would fall out of step, and asynchronous rounds have no phase.
    Robust aggregation acts on each round's neighbours (:func:`check_robust`)."""
    name = sched.name.split(":", 1)[0]
    if schedule == "async":
        why = "--schedule async" if cfg.schedule == "async" else \
            f"--algorithm {algorithm}, which has no rounds (asynchronous only)"
        raise ConfigError(f"{name} changes peers each synchronous round; it cannot run "
                          f"with {why}")
    compressed = any(c != "none" for c in codecs)
    if algorithm == "deepsqueeze":
        from .compression import uses_temporal

        if any(uses_temporal(c) for c in codecs):
            raise ConfigError(f"{name} hears a neighbour only in some rounds, so a "
                              "cabac:temporal chain would break; use plain cabac")
    elif algorithm != "dpsgd" or compressed:
        rule = f"{'compressed ' if compressed else ''}{algorithm}"
        if cfg.algorithm == "auto":
            rule = f"compressed gossip's default rule, {algorithm},"
        raise ConfigError(f"{name} changes peers each round: it takes --algorithm dpsgd "
                          f"(uncompressed) or deepsqueeze (compressed); {rule} keeps a copy "
                          "of every neighbour, updated every round")


def check_robust(robust: str, mixings, where: str, schedule: str = "sync") -> None:
    """Refuse a ``--robust`` rule that could act at no node in no round, given the
    mixing matrices (a graph's, or each phase's) and so the most neighbours any node
    hears in a round, k: BRIDGE-T's ``trimmed:BETA`` drops ⌊β·k⌋ of them each way, none
    while β·k < 1; adaptive ClippedGossip leaves (1 − δ) of the neighbour weight
    unclipped, all of it when there is one neighbour (ALGORITHMS.md, "Byzantine-robust
    gossip").  ``clip:TAU`` acts on any neighbour farther than τ, and ``trimmed:0``
    (BRIDGE-T's own-and-neighbours mean, trimming nothing) is taken as asked."""
    from .algorithms.robust import ADAPTIVE_DELTA, parse_robust, trim_count

    name, value = parse_robust(robust)
    if schedule == "async" and (name == "trimmed" or (name == "clip" and not value)):
        raise ConfigError(f"--robust {robust} compares the neighbours a round brings "
                          "together; without a barrier (--schedule async) a node mixes what "
                          "has arrived, often one or none, and it would act on almost "
                          "nothing: use clip:TAU, or --schedule sync")
    k = max(m.most_heard for m in mixings)
    if name == "trimmed" and value > 0 and trim_count(value, k) == 0:
        fix = f"a BETA of at least {math.ceil(1000 / k) / 1000:g}" if k >= 3 else "clip:TAU"
        raise ConfigError(f"--robust {robust} drops floor(BETA * k) of a node's k neighbours "
                          f"each way, and no node hears more than {k} a round on {where}: it "
                          f"would drop none; use {fix}")
    if name == "clip" and not value and not any(_can_clip(m, ADAPTIVE_DELTA) for m in mixings):
        why = (f"clips nothing with one neighbour a round, as on {where}" if k <= 1 else
               f"leaves the nearest neighbours holding {1 - ADAPTIVE_DELTA:g} of a node's "
               f"neighbour weight unclipped, and no node on {where} has a neighbour of at "
               f"most {ADAPTIVE_DELTA:g} of it (three or fewer equal ones): it would clip "
               "nothing")
        raise ConfigError(f"--robust clip (adaptive) {why}; use clip:TAU")


def _can_clip(m, delta: float) -> bool:
    """Whether adaptive clipping can clip a neighbour at some node of ``m``: the farthest
    one is clipped when the others hold at least 1 − δ of the node's neighbour weight
    (``algorithms.robust.adaptive_tau``), so some node needs two neighbours or more of
    positive weight, one of them with at most δ of it."""
    rows, _ = m.entries()
    positive = m.data > 0
    r, w = rows[positive], m.data[positive]
    if r.size == 0:
        return False
    counts = np.bincount(r, minlength=m.n)
    sums = np.bincount(r, weights=w, minlength=m.n)
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])  # entries come row by row
    least, at = np.minimum.reduceat(w, starts), r[starts]
    return bool(((counts[at] >= 2) & (least <= (delta + 1e-9) * sums[at])).any())


def late_links(specs, round_timeout: float, schedule: str = "sync") -> tuple:
    """A warning where a link's latency alone reaches ``--round-timeout``: in rounds with
    a barrier every message over it comes after its round and is missed (a run whose
    nodes then learn alone exited 0 without a word; its bandwidth is not checked, as a
    message's size depends on the codec and the model).  Without a barrier nothing
    waits for a round."""
    if schedule == "async":
        return ()
    late = [s.label for s in specs if s.link.latency_ms / 1e3 >= round_timeout]
    if not late:
        return ()
    shown = first_few(late)
    return (f"warning: the link latency of node(s) {shown} reaches --round-timeout "
            f"({round_timeout:g} s): their messages come after their round, and are missed",)


def late_round_trips(workers, coordinator, round_timeout: float) -> tuple:
    """A server run's :func:`late_links`: the coordinator waits a round time-out from its
    instructions, so a worker's reply is missed where the coordinator's latency plus the
    worker's reaches it (each alone may not: 5.1 s each way against 10 s missed every
    reply of every round, and the global model never changed, without a word)."""
    down = coordinator.link.latency_ms
    late = [w.label for w in workers if (down + w.link.latency_ms) / 1e3 >= round_timeout]
    if not late:
        return ()
    shown = first_few(late)
    return (f"warning: the link latency of the coordinator and of worker(s) {shown} "
            f"together reaches --round-timeout ({round_timeout:g} s): their replies come "
            "after their round, and are missed",)


def check_start_latency(specs, start_timeout: float) -> None:
    """A node's start-up hello travels its emulated link (it is never lost, but it is
    delayed), so a latency that reaches ``--start-timeout`` fails every start: 3 nodes
    "not ready after 5 s" at ``latency_ms=6000``, exit 1, without naming the link."""
    late = [s.label for s in specs if s.link.latency_ms / 1e3 >= start_timeout]
    if late:
        shown = first_few(late)
        raise ConfigError(f"the link latency of node(s) {shown} reaches --start-timeout "
                          f"({start_timeout:g} s): their start-up hello would come after it")


def check_public_size(cfg: RunConfig, learn) -> None:
    """FD's public set is held out of the training set, at most half of it: a larger
    ``--public-size`` ran with half in silence, while config.json kept the size asked."""
    if cfg.mode not in ("fd", "cfd"):
        return
    from .learner import shared_dataset

    n = len(shared_dataset(learn.dataset, learn.seed, learn.data_dir).y_train)
    if cfg.public_size > n // 2:
        default = " (the default)" if cfg.public_size == RunConfig.public_size else ""
        raise ConfigError(f"--public-size {cfg.public_size}{default}: at most half of the "
                          f"training set ({n // 2} of {n} samples of {learn.dataset}); give "
                          f"--public-size {n // 2} or less")


#: Below this fraction of entries kept, a coordinate-wise median of sparse updates lost
#: much of the run (:func:`sparse_median_warning`).
SPARSE_MEDIAN_BELOW = 0.05


def sparse_median_warning(aggregator: str, codec_up) -> tuple:
    """A coordinate-wise median or trimmed mean (Yin et al. 2018) of updates that each
    keep a fraction p of their entries is zero wherever fewer than half (or than the
    untrimmed middle) of the updates kept an entry.  `p2pfl cluster --mode fedavg
    --compression topk:P --nodes 8 --dataset digits --rounds 30 --aggregator A`, no
    Byzantine worker: median 0.930 at P = 0.05, 0.905 at 0.03, 0.568 at 0.01 (mean
    0.955-0.964); `--mode stc` (p = 0.01): median 0.5905, trimmed:0.25 0.7967, mean
    0.9359 (the server-mode audit's, re-run here).  Warned of below p = 0.05."""
    if aggregator.split(":", 1)[0] not in ("median", "trimmed") or codec_up in (None, "none"):
        return ()
    from .compression import make_codec

    kept = [st for st in getattr(make_codec(codec_up), "stages", ())
            if isinstance(getattr(st, "p", None), float) and st.p < SPARSE_MEDIAN_BELOW]
    if not kept:
        return ()
    return (f"warning: --aggregator {aggregator} of updates that keep {kept[0].p:g} of their "
            "entries is zero or near it wherever most left an entry out: the model barely "
            "learns (8 workers, no Byzantine one, 30 rounds: median 0.57 at 0.01, 0.91 at "
            "0.03, mean 0.96); krum:F, multikrum:F:M or normclip take whole updates",)
