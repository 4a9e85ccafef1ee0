"""The plan: one run, resolved and validated before any node starts.

``plan(config, graph) -> Plan`` builds the topology and its mixing weights,
loads the dataset and computes the partition, resolves every "auto" value
(mode defaults, the gossip algorithm, γ, the server codecs, error feedback per
direction) and checks every name a user can give (codec, algorithm, model,
dataset, partition, mode, mixing, node behaviour) against its registry.  The
result is one frozen :class:`~p2pfl.spec.NodeSpec` per node.  Any bad value
raises a :class:`~p2pfl.errors.UsageError` here, which the CLI reports as one
line with exit code 2, before a process is spawned.

Gossip and server modes share this one builder; they differ only in how the
node specs are laid out (a graph of peers, or workers around a coordinator).
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass

from . import topology as topo_mod
from .algorithms import ALGORITHMS, ASYNC_ONLY
from .algorithms.choco import default_gamma
from .algorithms.deepsqueeze import DeepSqueezeOptions
from .algorithms.gossip_learning import GossipLearningOptions
from .algorithms.options import CHOCOOptions, DPSGDOptions
from .config import RunConfig
from .errors import ConfigError
from .plan_nodes import check_codec, learn_specs, model_name, node_availability, node_codecs
from .plan_rules import (check_public_size, check_robust, check_start_latency,
                         check_time_varying, late_links, late_round_trips,
                         sparse_median_warning, whole_model_codec)
from .spec import LearnSpec, NodeSpec, RuntimeSpec, ServerInfo, plain_label
from .strategies import STRATEGIES
from .transport.links import LinkSpec, parse_link

__all__ = ["Plan", "plan", "check_codec"]


@dataclass(frozen=True)
class Plan:
    """A run ready to launch: the config, the node specs and what to report about them.

    ``closer`` is the node whose record completes a round (the coordinator in
    server modes); ``summary_base`` and ``record`` seed summary.json and
    config.json; ``info`` are the lines printed at the start.
    """

    config: RunConfig
    specs: tuple
    summary_base: dict
    record: dict
    info: tuple = ()
    closer: int | None = None
    restarts: int = 0  # how often the launcher may restart each node that died
    keys: object = None  # RunKeys with --secure (p2pfl/keys.py); never written to a file


def plan(cfg: RunConfig, graph=None) -> Plan:
    """Resolve and validate everything about a run; start nothing."""
    restarts = parse_restart(cfg.restart)
    _check_codec_flags(cfg)
    if restarts and cfg.in_process:
        raise ConfigError("--restart on-failure restarts node processes; "
                          "it does not apply with --in-process")
    p = _gossip_plan(cfg, graph, restarts) if cfg.mode == "gossip" else _server_plan(cfg, graph)
    check_start_latency(p.specs, cfg.start_timeout)
    if graph is not None:  # config.json and the summary say what ran, not the default
        p = _graph_record(p, graph)
    return dataclasses.replace(p, restarts=restarts, keys=_run_keys(cfg, p.specs))


def _check_codec_flags(cfg: RunConfig) -> None:
    """Each codec flag's spec parses, and an error names its flag: two specs (up and
    down) gave one message that did not say which was wrong."""
    for flag, spec in (("--compression", cfg.compression),
                       ("--compression-down", cfg.compression_down)):
        if isinstance(spec, str) and spec not in ("none", "auto"):
            try:
                check_codec(spec)
            except ConfigError as exc:
                raise ConfigError(f"{flag} {spec}: {exc}") from None


def _graph_record(p: Plan, graph) -> Plan:
    """A run over a graph object: its kind and edges, ``[u, v]`` or ``[u, v, {attributes}]``
    (an edge's weights: they set the mixing weights), go in place of the topology spec,
    there and in the plan's config (``Result.config``: not the default ring:8)."""
    name = f"networkx {type(graph).__name__} ({graph.number_of_nodes()} nodes)"
    record = dict(p.record, topology=name)
    record["resolved"] = dict(record["resolved"], graph_edges=topo_mod.edges_as_run(graph))
    base = p.summary_base  # a server run's summary topology is its star
    if p.closer is None:
        base = dict(base, topology=name)
    return dataclasses.replace(p, config=p.config.replace(topology=name), record=record,
                               summary_base=base)


def _run_keys(cfg: RunConfig, specs):
    """With ``--secure``: fresh keys for a local cluster, or those of ``--keys DIR``."""
    if not cfg.secure:
        return None
    from .keys import RunKeys

    if cfg.keys is None:
        return RunKeys.ephemeral([s.id for s in specs])
    return RunKeys.from_folder(cfg.keys, [(s.id, s.label) for s in specs],
                               secrets=cfg.listen is None)


def parse_restart(text: str) -> int:
    """``no`` → 0; ``on-failure[:N]`` → N (default 3)."""
    name, _, limit = str(text).partition(":")
    if name == "no" and not limit:
        return 0
    if name == "on-failure":
        if not limit:
            return 3
        if limit.isdigit() and int(limit) >= 1:
            return int(limit)
    raise ConfigError(f"--restart expects no or on-failure[:N] with N >= 1, got {text!r}")


def _runtime_spec(cfg: RunConfig, schedule: str = "sync", codecs=()) -> RuntimeSpec:
    return RuntimeSpec(rounds=cfg.rounds, round_timeout=cfg.round_timeout,
                       start_timeout=cfg.start_timeout, eval_every=cfg.eval_every,
                       consensus=cfg.consensus, schedule=schedule,
                       exchange_only=cfg.exchange_only, codec_names=_codec_table(codecs),
                       cpu_policy=cfg.cpu_policy, save_models=cfg.save_models)


def _codec_table(specs) -> tuple:
    """The run's codec table: the wire name of each distinct codec spec its nodes use,
    one codec built per spec, not per node (``none`` stays a string: it is short, and
    the launcher sees it too)."""
    from .compression import make_codec

    return tuple(sorted({make_codec(s).name for s in set(specs) - {"none"}}))


# ------------------------------------------------------------------ gossip
def _algorithm(cfg: RunConfig, codecs: list) -> str:
    """The gossip rule: ``auto`` is CHOCO for all nodes when any node compresses."""
    if cfg.algorithm == "auto":
        return "dpsgd" if all(c == "none" for c in codecs) else "choco"
    if cfg.algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {cfg.algorithm!r}; valid: auto, "
                          f"{', '.join(sorted(ALGORITHMS))}")
    return cfg.algorithm


#: Codecs whose CHOCO nodes train with quasi-global momentum (see _momentum_mode).
QUASI_GLOBAL_CODECS = ("topk", "stc", "sbc")


def _momentum_mode(algorithm: str, codec: str) -> str:
    """Quasi-global momentum for CHOCO nodes with a top-k-like sparsifier, else local.

    Defect 9: with a local buffer, compressed gossip (stc:0.05) drifted apart over
    300 rounds; the quasi-global buffer (training.QuasiGlobalMomentum) holds it
    together.  It also carries the consensus step's motion forward, which for
    codecs mixed at a large γ (sign, qsgd, terngrad, random-k: γ 0.3 and up)
    drove the benchmark's nodes to non-finite weights, so those keep the
    local buffer.
    """
    name = codec.split("+", 1)[0].split(":", 1)[0]
    return "quasi-global" if algorithm == "choco" and name in QUASI_GLOBAL_CODECS else "local"


def run_gamma(cfg: RunConfig, codecs: list) -> float:
    """CHOCO's and DeepSqueeze's consensus step size γ, one for every node: ``--gamma``,
    else the smallest of the nodes' codecs' defaults.  The consensus step
    x_i += γ Σ_j w_ij (x̂_j − x̂_i) keeps the network's average only with one γ (its sum
    over i cancels with a symmetric W); nodes with codecs of their own (a profile's)
    took each their codec's γ, and the average drifted."""
    return cfg.gamma or min(default_gamma(c) for c in set(codecs))


def _gossip_options(cfg: RunConfig, algorithm: str, codec: str, learn: LearnSpec,
                    gamma: float):
    """The rule's options; error feedback (the residual x − x̂) is kept unless ``off``
    (or there is none: uncompressed D-PSGD)."""
    keep = cfg.error_feedback != "off"
    if algorithm == "gossip-learning":
        if cfg.mixing != "metropolis":  # its merge weighs two models by their age
            raise ConfigError("--mixing applies to the mixing rules (dpsgd, choco, "
                              "deepsqueeze); gossip-learning merges two models by their age")
        if codec != "none":
            raise ConfigError("gossip-learning exchanges whole models; compression needs "
                              "--algorithm dpsgd, choco or deepsqueeze")
        if cfg.robust != "none":
            raise ConfigError("--robust applies to --algorithm dpsgd and choco")
        return GossipLearningOptions(steps=max(1, learn.local_steps))
    if algorithm == "deepsqueeze":
        if cfg.robust != "none":
            raise ConfigError("--robust applies to --algorithm dpsgd and choco")
        whole_model_codec(codec)
        return DeepSqueezeOptions(codec=codec, gamma=gamma,
                                  error_feedback=keep and codec != "none")
    if algorithm == "choco":
        return CHOCOOptions(codec=codec, gamma=gamma,
                            error_feedback=keep, robust=cfg.robust)
    # uncompressed D-PSGD sends whole models: there is no residual to keep
    return DPSGDOptions(codec=codec, error_feedback=keep and codec != "none",
                        robust=cfg.robust)


def _gossip_plan(cfg: RunConfig, graph, restarts: int = 0) -> Plan:
    if cfg.aggregator != "auto":
        raise ConfigError("--aggregator applies to server modes (fedavg, stc, cfl); "
                          "gossip mixes neighbours' models")
    topo = topo_mod.build(graph if graph is not None else cfg.topology, scheme=cfg.mixing,
                          seed=cfg.seed)
    labels = [plain_label(x) for x in topo.labels]
    _groups(cfg, topo.n)  # a groups:K that does not fit the nodes fails here, not in them
    per_node, learns = learn_specs(cfg, labels)
    codecs = node_codecs(cfg, per_node, labels)
    algorithm = _algorithm(cfg, codecs)
    if cfg.gamma is not None and algorithm not in ("choco", "deepsqueeze"):
        raise ConfigError(f"--gamma is the consensus step size of CHOCO and DeepSqueeze; this "
                          f"run's algorithm is {algorithm} (compress with --compression, or "
                          "--algorithm choco or deepsqueeze)")
    availability = node_availability(cfg, labels, per_node)
    schedule = "async" if algorithm in ASYNC_ONLY else cfg.schedule
    if topo.schedule is not None:
        check_time_varying(cfg, topo.schedule, algorithm, codecs, schedule)
    if cfg.robust != "none" and algorithm in ("dpsgd", "choco"):
        check_robust(cfg.robust, topo.schedule.phases if topo.schedule is not None
                     else (topo.mixing,), "the given graph" if graph is not None
                     else str(cfg.topology), schedule)
    # presence (a node says when it leaves or is done): under churn and restarts, and
    # without a barrier, where a node finishes long before a slow neighbour, which would
    # otherwise go on sending it a model every iteration that nobody reads
    presence = bool(restarts) or schedule == "async" or any(a.active for a in availability)
    runtime = dataclasses.replace(_runtime_spec(cfg, schedule, codecs), presence=presence)
    learns = [dataclasses.replace(x, momentum_mode=_momentum_mode(algorithm, codecs[i]))
              for i, x in enumerate(learns)]
    phases = topo.schedule.node_phases() if topo.schedule is not None else None
    gamma = run_gamma(cfg, codecs)
    specs = tuple(NodeSpec(
        id=i, label=labels[i], role="gossip",
        neighbours=_row(topo, i), self_weight=_self_weight(topo, i), learn=learns[i],
        runtime=runtime,
        rule=algorithm, options=_gossip_options(cfg, algorithm, codecs[i], learns[i], gamma),
        link=LinkSpec(**per_node[i]["link"]), availability=availability[i],
        phases=phases[i] if phases is not None else ())
        for i in range(topo.n))
    record = dict(cfg.to_dict(), resolved={
        "nodes": topo.n, "labels": labels, "spectral_gap": topo.spectral_gap,
        "algorithm": algorithm, "schedule": schedule, "options": _options_record(specs),
        "python": platform.python_version()})
    base = {"mode": cfg.mode, "algorithm": algorithm, "schedule": schedule,
            "nodes": topo.n, "rounds": cfg.rounds,
            "topology": str(cfg.topology), "edges": topo.graph.number_of_edges(),
            "spectral_gap": topo.spectral_gap, "topology_phases": _phases(topo)}
    info = (f"topology: {topo_mod.describe(topo)}",) + tuple(f"warning: {w}"
                                                            for w in topo.warnings)
    info += late_links(specs, cfg.round_timeout, schedule)
    if schedule != cfg.schedule:  # gossip learning has no barrier: say so, not silently
        info += (f"note: {algorithm} runs without a round barrier (--schedule async); "
                 "--rounds counts each node's local iterations",)
    return Plan(cfg, specs, base, record, info)


def _row(topo, i: int) -> tuple:
    """Node ``i``'s ``(neighbour, w_ij)`` pairs: its row of the mixing matrix, or under a
    schedule every link of the base graph at 0 (each phase gives its own weights)."""
    if topo.schedule is not None:
        return tuple((j, 0.0) for j in topo.neighbours(i))
    return tuple(zip(*(a.tolist() for a in topo.mixing.row(i))))


def _self_weight(topo, i: int) -> float:
    return 1.0 if topo.schedule is not None else float(topo.mixing.diag[i])


def _phases(topo) -> int | None:
    """A time-varying topology's period (its phases); None for a static graph."""
    return None if topo.schedule is None else topo.schedule.period


def _options_record(specs) -> dict:
    """Each distinct resolved options value, with the labels of the nodes that have it."""
    out: dict = {}
    for s in specs:
        key = repr(s.options)
        out.setdefault(key, {"options": dataclasses.asdict(s.options), "nodes": []})
        out[key]["nodes"].append(s.label)
    return {"by_node": list(out.values())}


# ------------------------------------------------------------------ server
def _server_labels(cfg: RunConfig, graph) -> list:
    if cfg.nodes is not None and graph is not None:
        raise ConfigError("nodes= and a graph both give the workers of a server run; "
                          "give one of them")
    if cfg.nodes is not None:
        return list(range(cfg.nodes))
    if graph is None and topo_mod.is_schedule(cfg.topology):
        raise ConfigError(f"{cfg.topology} is a gossip schedule (a topology that changes "
                          "every round); a server run's workers come from --nodes or a graph")
    topo = topo_mod.build(graph if graph is not None else cfg.topology, scheme=cfg.mixing,
                          seed=cfg.seed)
    return [plain_label(x) for x in topo.labels]


def _groups(cfg: RunConfig, n: int) -> tuple:
    if not cfg.partition.startswith("groups:"):
        return (0,) * n
    from .partition import parse_partition, partition_groups

    return tuple(int(g) for g in partition_groups(n, parse_partition(cfg.partition)[1]))


def _strategy_options(cfg: RunConfig):
    if cfg.mode not in STRATEGIES:
        raise ConfigError(f"unknown mode {cfg.mode!r}; valid: gossip, {', '.join(STRATEGIES)}")
    options = STRATEGIES[cfg.mode].options.from_config(cfg)
    if cfg.robust != "none":
        raise ConfigError("--robust applies to gossip; server modes have --aggregator")
    if cfg.aggregator != "auto" and not hasattr(options, "aggregator"):
        raise ConfigError(f"--aggregator applies to modes fedavg, stc and cfl, not {cfg.mode}")
    for name in ("codec_up", "codec_down"):
        if hasattr(options, name):
            check_codec(getattr(options, name))
    return options


def _check_krum(spec: str, n: int, participation: float) -> tuple:
    """Krum scores an update by its n − F − 2 nearest others, and Multi-Krum averages M
    of n: an F or M that a round's reports cannot give is an error, not a clamp.  A
    round hears from max(1, round(participation · n)) workers at most.  Returns the
    warnings: Krum's guarantee against F Byzantine updates needs n ≥ 2F + 3 (Blanchard
    et al., NeurIPS 2017), which fewer still compute."""
    from .strategies.robust import parse_aggregator

    agg = parse_aggregator(spec)
    per_round = max(1, int(round(participation * n)))
    if agg.name not in ("krum", "multikrum"):
        return ()
    has = f"this run has {per_round} ({n} workers, participation {participation:g})"
    if per_round < agg.f + 3 or agg.m > per_round:
        need = max(agg.f + 3, agg.m)
        raise ConfigError(f"--aggregator {spec} needs at least {need} updates a round "
                          f"(F + 3{', and M' if agg.name == 'multikrum' else ''}); {has}")
    if per_round < 2 * agg.f + 3:
        return (f"warning: --aggregator {spec} is robust to F = {agg.f} Byzantine updates "
                f"only with at least 2F + 3 = {2 * agg.f + 3} a round (Blanchard et al.); "
                f"{has}",)
    return ()


def _has_filters(model) -> bool:
    """Whether ``model`` (a name) has convolution kernels, which filter scaling scales."""
    from .models import CUSTOM

    if isinstance(model, str) and model in CUSTOM:
        return any(p.dim() >= 3 for p in CUSTOM[model].parameters())
    return isinstance(model, str) and model.split(":", 1)[0] == "cnn"


def _server_plan(cfg: RunConfig, graph) -> Plan:
    from .compression import uses_temporal

    options = _strategy_options(cfg)
    check_codec(cfg.compression)
    if cfg.compression != "none" and not hasattr(options, "codec_up"):
        what = "soft labels" if cfg.mode in ("fd", "cfd") else "updates"
        raise ConfigError(f"--compression applies to gossip and to modes fedavg and stc; "
                          f"mode {cfg.mode} sends its {what} uncompressed")
    up, down = getattr(options, "codec_up", "none"), getattr(options, "codec_down", None)
    if down is not None and uses_temporal(down):
        raise ConfigError("cabac:temporal and powersgd:R:alternate code the workers' updates; "
                          "the server's downstream updates are broadcast and cached: give "
                          "--compression-down plain cabac or powersgd:R")
    if getattr(options, "filter_scaling", False) and not _has_filters(cfg.model):
        raise ConfigError(f"--filter-scaling on scales convolution filters; model "
                          f"{cfg.model!r} has none (use cnn or cnn:C1-C2)")
    labels = _server_labels(cfg, graph)
    n = len(labels)
    aggregator = getattr(options, "aggregator", "mean")
    warnings = (_check_krum(aggregator, n, cfg.participation)
                + sparse_median_warning(aggregator, up))
    per_node, learns = learn_specs(cfg, labels)
    check_public_size(cfg, learns[0])
    colluders = sum(x.behaviour == "alie" for x in learns)
    shaped = next((x.behaviour for x in learns if x.behaviour in ("alie", "sign_flip")), None)
    if shaped and cfg.mode in ("fd", "cfd"):  # FDClient.reply would send honest labels
        raise ConfigError(f"behaviour {shaped} shapes model updates; {cfg.mode} exchanges "
                          "soft labels (use random, noisy, label_flip or silent)")
    learns = [dataclasses.replace(x, colluders=colluders) if x.behaviour == "alie" else x
              for x in learns]
    if any(c != cfg.compression for c in node_codecs(cfg, per_node, labels)):
        raise ConfigError("a node profile sets compression: in server modes every worker "
                          "uses the run's codec (--compression)")
    runtime = _runtime_spec(cfg, codecs=[c for c in (up, down) if c is not None])
    availability = node_availability(cfg, labels, per_node)  # workers only: the server stays up
    workers = [NodeSpec(id=i, label=labels[i], role="worker", neighbours=((n, 1.0),),
                        self_weight=0.0, learn=learns[i], runtime=runtime, rule=cfg.mode,
                        options=options, link=LinkSpec(**per_node[i]["link"]),
                        availability=availability[i])
               for i in range(n)]
    run_link = LinkSpec(**(parse_link(cfg.link) if cfg.link else {}))
    coord_learn = dataclasses.replace(learns[0], model=model_name(cfg, cfg.model),
                                      behaviour="honest", slowdown=1.0)
    groups = _groups(cfg, n)
    coordinator = NodeSpec(id=n, label="coordinator", role="coordinator",
                           neighbours=tuple((i, 1.0) for i in range(n)), self_weight=0.0,
                           learn=coord_learn, runtime=runtime, rule=cfg.mode, options=options,
                           server=ServerInfo(labels=tuple(labels), groups=groups,
                                             byzantine=tuple(w.id for w in workers
                                                             if w.learn.behaviour != "honest"),
                                             target_accuracy=cfg.target_accuracy),
                           link=run_link)
    record = dict(cfg.to_dict(), resolved={
        "nodes": n, "labels": labels, "options": dataclasses.asdict(options),
        "python": platform.python_version()})
    base = {"mode": cfg.mode, "algorithm": cfg.mode, "nodes": n, "workers": n,
            "rounds": cfg.rounds, "topology": "star (coordinator)", "edges": n,
            "participation": options.participation}
    return Plan(cfg, tuple(workers) + (coordinator,), base, record,
                (f"{cfg.mode}: {n} workers + 1 coordinator",) + warnings
                + late_round_trips(workers, coordinator, cfg.round_timeout), closer=n)

