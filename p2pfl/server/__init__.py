"""Server-mode FL (FedAvg, STC, CFL, FD, CFD) over the same nodes as gossip.

``p2pfl cluster --mode fedavg|stc|cfl|fd|cfd --nodes N`` starts N workers
(ids 0..N-1, the same node program as gossip) and one coordinator (id N,
label ``"coordinator"``).  Workers talk only to the coordinator.  The round
loop is :class:`~p2pfl.server.coordinator.Coordinator`; what differs between
modes are the strategy hooks in :mod:`p2pfl.strategies`.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from ..config import RunConfig, node_settings
from ..errors import ConfigError

__all__ = ["run_server", "make_server_role", "server_specs", "resolve_mode_settings"]


def make_server_role(role: str, ep, mailbox, spec: dict):
    """The loop object of a server-mode node: ``worker`` or ``coordinator``."""
    if role == "worker":
        from .worker import Worker

        return Worker(ep, mailbox, spec)
    if role == "coordinator":
        from .coordinator import Coordinator

        return Coordinator(ep, mailbox, spec)
    raise ConfigError(f"unknown node role {role!r}; valid: gossip, worker, coordinator")


def resolve_mode_settings(cfg: RunConfig) -> dict:
    """Mode-dependent defaults, resolved once for every node.

    * stc: ``--compression none`` means ``stc:0.01+golomb``; downstream
      (``--compression-down auto``) uses the upstream spec.
    * fd: soft labels as float32 (``fd_bits`` 0), no delta coding.
    * cfd: 1-bit soft labels (``fd_bits`` 1), delta coding on.
    """
    up = cfg.compression
    if cfg.mode == "stc" and up == "none":
        up = "stc:0.01+golomb"
    down = up if cfg.compression_down == "auto" else cfg.compression_down
    bits = cfg.fd_bits if cfg.fd_bits is not None else (1 if cfg.mode == "cfd" else 0)
    delta = cfg.fd_delta == "on" or (cfg.fd_delta == "auto" and cfg.mode == "cfd")
    return {"compression": up, "compression_down": down, "fd_bits": int(bits),
            "fd_delta": bool(delta)}


def _worker_labels(cfg: RunConfig, graph) -> list:
    if cfg.nodes is not None:
        return list(range(cfg.nodes))
    from .. import topology as topo_mod
    from ..api import _plain_label

    topo = topo_mod.build(graph if graph is not None else cfg.topology, scheme=cfg.mixing,
                          seed=cfg.seed)
    return [_plain_label(x) for x in topo.labels]


def server_specs(cfg: RunConfig, graph=None) -> list:
    """Node specs: workers 0..N-1 (neighbour: the coordinator) and the coordinator N."""
    labels = _worker_labels(cfg, graph)
    n = len(labels)
    per_node = [node_settings(cfg, i, labels[i]) for i in range(n)]
    shares = [float(s["data_share"]) for s in per_node]
    resolved = resolve_mode_settings(cfg)
    base = dict(cfg.to_dict(), num_nodes=n, shares=shares, algorithm_resolved=cfg.mode)
    base.pop("node_overrides", None)
    specs = []
    for i in range(n):
        settings = dict(base, **per_node[i])
        settings.update(resolved)  # the mode's resolved wire settings are run-wide
        specs.append({"id": i, "label": labels[i], "role": "worker",
                      "neighbours": [[n, 1.0]], "self_weight": 0.0, "settings": settings})
    coord = dict(base, **resolved)
    coord.update(behaviour="honest", data_share=1.0,
                 worker_labels={str(i): labels[i] for i in range(n)},
                 worker_groups={str(i): int(g) for i, g in enumerate(_groups(cfg, n))})
    specs.append({"id": n, "label": "coordinator", "role": "coordinator",
                  "neighbours": [[i, 1.0] for i in range(n)], "self_weight": 0.0,
                  "settings": coord})
    return specs


def _groups(cfg: RunConfig, n: int) -> list:
    if not cfg.partition.startswith("groups:"):
        return [0] * n
    from ..data import partition_groups

    return [int(g) for g in partition_groups(n, int(cfg.partition.split(":", 1)[1]))]


def run_server(cfg: RunConfig, graph=None):
    """Run a server-mode cluster and return its :class:`~p2pfl.api.Result`."""
    from ..api import _check_learning_options, _out_dir, execute
    from ..metrics import write_json_atomic
    from ..progress import Progress
    from ..strategies.base import _lookup

    t0 = time.monotonic()
    _lookup(cfg.mode)  # an unknown mode fails before any node starts
    specs = server_specs(cfg, graph)
    _check_learning_options(cfg)
    n = len(specs) - 1
    out = _out_dir(cfg)
    progress = Progress(cfg.rounds, quiet=cfg.quiet)
    progress.info(f"{cfg.mode}: {n} workers + 1 coordinator")
    rec = cfg.to_dict()
    rec["resolved"] = dict(resolve_mode_settings(cfg), nodes=n,
                           labels=[s["label"] for s in specs[:-1]],
                           python=platform.python_version())
    write_json_atomic(os.path.join(out, "config.json"), rec)
    base = {"mode": cfg.mode, "algorithm": cfg.mode, "nodes": n, "workers": n,
            "rounds": cfg.rounds, "topology": "star (coordinator)", "edges": n,
            "participation": cfg.participation}
    return execute(cfg, specs, out, progress, t0, base, closer=n,
                   on_summary=lambda summary, sink, nodes: _server_summary(
                       summary, sink, nodes, specs))


def _server_summary(summary: dict, sink, nodes: dict, specs: list) -> None:
    """Add bytes up/down, per-round global accuracy and the strategy's own fields."""
    coord_id = specs[-1]["id"]
    labels = {s["id"]: s["label"] for s in specs}
    finals = {i: h.final for i, h in nodes.items() if h.final}
    summary["bytes_up_total"] = int(sum(f.get("bytes_sent", 0) for i, f in finals.items()
                                        if i != coord_id))
    summary["bytes_down_total"] = int(finals.get(coord_id, {}).get("bytes_sent", 0))
    coord_recs = [r for r in sink.records if r.get("node") == coord_id]
    for key in ("global_accuracy", "cluster_accuracy", "ensemble_accuracy"):
        rows = [[r["round"], r[key]] for r in coord_recs if r.get(key) is not None]
        if rows:
            summary[f"{key}_per_round"] = rows
    summary["bytes_per_round"] = [[r["round"], r["bytes_sent"], r["bytes_received"]]
                                  for r in coord_recs]
    # workers' final accuracy, split by behaviour (clean = honest workers)
    acc = sink.accuracy_by_node()
    behaviour = {s["id"]: s["settings"].get("behaviour", "honest") for s in specs[:-1]}
    clean = [a for i, a in acc.items() if behaviour.get(i) == "honest"]
    summary["accuracy_clean_mean"] = float(np.mean(clean)) if clean else None
    summary["behaviours"] = {str(labels[i]): b for i, b in behaviour.items() if b != "honest"}
    summary["final_accuracy_by_worker"] = {str(labels[i]): a for i, a in sorted(acc.items())}
    groups = specs[-1]["settings"].get("worker_groups", {})
    if specs[-1]["settings"]["partition"].startswith("groups:"):
        by_group: dict = {}
        for i, g in groups.items():
            by_group.setdefault(g, []).append(labels[int(i)])
        summary["groups"] = [by_group[g] for g in sorted(by_group)]
    summary.update(finals.get(coord_id, {}).get("strategy", {}))
