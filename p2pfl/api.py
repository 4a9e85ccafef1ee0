"""The Python entry point: ``p2pfl.run_cluster(graph, **options)``.

It resolves the options, checks the topology, dataset and model before any
process starts, prepares the run folder, runs the launcher and writes the
summary.  The CLI's ``p2pfl cluster`` is a thin layer over it.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from . import topology as topo_mod
from .config import RunConfig, from_sources, node_settings
from .errors import ConfigError, UsageError
from .metrics import MetricsSink, write_json_atomic
from .progress import Progress

__all__ = ["run_cluster", "Result", "prepare"]


@dataclass
class Result:
    """What a run produced: ``summary`` (the dict in summary.json), ``metrics``
    (the per-node, per-round records) and ``out_dir``."""

    summary: dict
    metrics: list
    out_dir: str


def _resolve_algorithm(cfg: RunConfig) -> str:
    if cfg.algorithm != "auto":
        return cfg.algorithm
    return "dpsgd" if cfg.compression == "none" else "choco"


def _check_learning_options(cfg: RunConfig) -> None:
    """Fail fast, with one line, on an unknown dataset, model or partition."""
    from .learner import shared_dataset, warm_up
    from .models import CUSTOM, MODELS

    shared_dataset(cfg.dataset, cfg.seed, cfg.data_dir)  # forked nodes inherit the loaded data
    warm_up()
    if cfg.model in CUSTOM and cfg.listen:
        raise ConfigError("a torch module passed as model= cannot reach remote nodes; "
                          "use a model name")
    if cfg.model not in CUSTOM and cfg.model.split(":", 1)[0] not in MODELS:
        raise ConfigError(f"unknown model {cfg.model!r}; valid: {', '.join(sorted(MODELS))}")


def _check_partition(cfg: RunConfig, num_nodes: int, shares: list) -> None:
    """Compute the partition once here: a bad spec fails before any node starts,
    and forked nodes inherit the cached result."""
    from .learner import shard_indices

    shard_indices({"dataset": cfg.dataset, "seed": cfg.seed, "data_dir": cfg.data_dir,
                   "num_nodes": num_nodes, "partition": cfg.partition, "shares": shares}, 0)


def prepare(cfg: RunConfig, graph=None) -> tuple:
    """Topology and per-node specs for a run, validated; no process is started."""
    topo = topo_mod.build(graph if graph is not None else cfg.topology, scheme=cfg.mixing,
                          seed=cfg.seed)
    _check_learning_options(cfg)
    n = topo.n
    specs = []
    per_node = [node_settings(cfg, i, topo.labels[i]) for i in range(n)]
    algorithm = _resolve_algorithm(cfg)
    if cfg.algorithm == "auto" and any(s["compression"] != "none" for s in per_node):
        algorithm = "choco"  # one protocol for all, if a profile compresses some nodes
    shares = [float(s["data_share"]) for s in per_node]
    _check_partition(cfg, n, shares)
    for i in range(n):
        settings = dict(cfg.to_dict(), **per_node[i])
        settings.pop("node_overrides", None)
        settings.update(num_nodes=n, shares=shares, algorithm_resolved=algorithm)
        specs.append({
            "id": i, "label": _plain_label(topo.labels[i]),
            "neighbours": [[j, float(topo.weights[i, j])] for j in topo.neighbours(i)],
            "self_weight": float(topo.weights[i, i]),
            "settings": settings,
        })
    return topo, specs


def _plain_label(label):
    """Labels go through msgpack and JSON: keep ints and strings, stringify the rest."""
    if isinstance(label, (bool, np.bool_)):
        return str(label)
    if isinstance(label, (int, np.integer)):
        return int(label)
    return label if isinstance(label, str) else str(label)


def _out_dir(cfg: RunConfig) -> str:
    out = cfg.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-{cfg.mode}")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out}: {exc.strerror}") from None
    return out


def run_cluster(graph=None, *, config: str | None = None, **options) -> Result:
    """Run a gossip cluster over ``graph`` and return its :class:`Result`.

    Parameters
    ----------
    graph : networkx.Graph, str or None
        The topology: a graph, a file path or a generator spec such as
        ``"ring:8"``.  ``None`` takes ``topology`` from the options.
    config : str, optional
        A TOML file of options; keyword options override it.
    **options
        Any option of :class:`~p2pfl.config.RunConfig` (the CLI's flags).
        ``model`` may also be any ``torch.nn.Module`` that maps a batch of
        the dataset's inputs to class logits; every node starts from a copy
        of its weights.

    Examples
    --------
    >>> import networkx as nx, p2pfl
    >>> res = p2pfl.run_cluster(nx.cycle_graph(4), rounds=3, quiet=True)  # doctest: +SKIP
    >>> res.summary["accuracy_mean"]  # doctest: +SKIP
    """
    if isinstance(graph, str):
        options.setdefault("topology", graph)
        graph = None
    if not isinstance(options.get("model", ""), str):  # a torch.nn.Module of the user's
        from .models import register_module

        options["model"] = register_module(options["model"])
    cfg = from_sources(config, options)
    if cfg.mode != "gossip":
        from .server import run_server  # server-mode FL over the same nodes

        return run_server(cfg, graph)
    t0 = time.monotonic()
    topo, specs = prepare(cfg, graph)
    out = _out_dir(cfg)
    progress = Progress(cfg.rounds, quiet=cfg.quiet)
    progress.info(f"topology: {topo_mod.describe(topo)}")
    for w in topo.warnings:
        progress.info(f"warning: {w}")
    algorithm = specs[0]["settings"]["algorithm_resolved"]
    write_json_atomic(os.path.join(out, "config.json"), _config_record(cfg, topo, algorithm))
    return execute(cfg, specs, out, progress, t0, _topology_summary(cfg, topo, algorithm))


def _config_record(cfg: RunConfig, topo, algorithm: str) -> dict:
    rec = cfg.to_dict()
    rec["resolved"] = {"nodes": topo.n, "labels": [_plain_label(x) for x in topo.labels],
                       "spectral_gap": topo.spectral_gap, "algorithm": algorithm,
                       "python": platform.python_version()}
    return rec


def _topology_summary(cfg: RunConfig, topo, algorithm: str) -> dict:
    return {"mode": cfg.mode, "algorithm": algorithm, "nodes": topo.n,
            "rounds": cfg.rounds, "topology": str(cfg.topology),
            "edges": topo.graph.number_of_edges(), "spectral_gap": topo.spectral_gap}


def execute(cfg: RunConfig, specs: list, out: str, progress: Progress, t0: float,
            summary_base: dict, *, closer=None, on_summary=None) -> Result:
    """Launch ``specs``, stream the records to ``out``, and write ``summary.json``.

    Shared by gossip and server modes.  ``summary_base`` holds the mode's own
    summary fields; ``on_summary(summary, sink, nodes)`` may add more before it
    is written.  ``closer`` is the node whose record completes a round.
    """
    from .cluster import Launcher

    stopped_at = []

    def on_round(rnd, rows):
        accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        sent = sum(r["bytes_sent"] for r in sink.records)
        acc = f"acc {np.mean(accs):.3f}" if accs else "acc   -  "
        progress.update(rnd, f"{acc} | {sent / 1e6:.2f} MB sent")
        if cfg.target_accuracy is not None and accs and np.mean(accs) >= cfg.target_accuracy:
            if not stopped_at:
                stopped_at.append(rnd)
                launcher.request_stop()

    sink = MetricsSink(out, [s["id"] for s in specs], on_round=on_round, closer=closer)

    def on_message(handle, msg):
        if msg is None or msg.kind in ("bye", "error"):
            sink.node_gone(handle.id)
        elif msg.kind == "metrics":
            vec = np.frombuffer(msg.frames[0], "<f4") if msg.frames else None
            sink.add(msg.meta, vec)

    launcher = Launcher(specs, out, in_process=cfg.in_process, scheme=cfg.transport,
                        host=cfg.host, start_timeout=cfg.start_timeout,
                        round_timeout=cfg.round_timeout, on_message=on_message,
                        log=progress.info, listen=cfg.listen)
    try:
        nodes = launcher.run()
    finally:
        sink.close()
        progress.close()
    launcher.write_nodes_json()
    summary = dict(summary_base)
    summary.update(_run_summary(cfg, sink, nodes, time.monotonic() - t0, launcher))
    summary["target_reached_at_round"] = stopped_at[0] if stopped_at else None
    if on_summary:
        on_summary(summary, sink, nodes)
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    if summary["accuracy_mean"] is not None:
        progress.info(f"accuracy mean {summary['accuracy_mean']:.4f} (min "
                      f"{summary['accuracy_min']:.4f}) | {summary['bytes_sent_total'] / 1e6:.2f}"
                      f" MB sent | {summary['wall_s']:.1f} s")
    progress.info(f"results in {out}")
    return Result(summary, sink.records, out)


def _run_summary(cfg, sink, nodes, wall, launcher) -> dict:
    base = sink.summary()
    finals = [h.final for h in nodes.values() if h.final]
    failed = {str(h.label): h.reason for h in nodes.values() if h.state == "failed"}
    sent_by_nodes = int(sum(f.get("bytes_sent", 0) for f in finals))
    num_params = finals[0].get("num_params") if finals else None
    messages = sum(f.get("model_messages", 0) for f in finals)
    dense = 4 * num_params * messages if num_params else 0
    return {
        "dataset": cfg.dataset, "model": cfg.model, "partition": cfg.partition,
        "compression": cfg.compression,
        "num_params": num_params,
        "accuracy_mean": base["accuracy_mean"], "accuracy_min": base["accuracy_min"],
        "accuracy_max": base["accuracy_max"],
        "bytes_sent_total": base["bytes_sent_total"],
        "bytes_received_total": int(sum(f.get("bytes_received", 0) for f in finals)),
        "bytes_sent_counted_by_nodes": sent_by_nodes,
        "bits_per_param_mean": 8 * base["bytes_sent_total"] / (dense / 4) if dense else None,
        "compression_ratio": dense / base["bytes_sent_total"] if dense and base[
            "bytes_sent_total"] else None,
        "handshake_bytes": int(sum(f.get("handshake_bytes", 0) for f in finals)),
        "control_bytes": launcher.control_bytes,
        "misses_total": int(sum(n for f in finals for _, n in f.get("misses", []))),
        "dropped_total": int(sum(sum(f.get("dropped", {}).values()) for f in finals)),
        "failed_nodes": failed,
        # per direction and peer: [sender label, receiver label, bytes] (handshake included)
        "bytes_per_link": [[nodes[f["node"]].label, nodes[j].label, n] for f in finals
                           for j, n in f.get("sent_per_peer", []) if j in nodes],
        "wall_s": round(wall, 3),
        "accuracy_per_round": base["accuracy_per_round"],
    }
