"""summary.json: the figures of a finished run, from the records and the final counters.

Pure functions of the plan, the metrics sink and the launcher's node handles;
nothing here talks to a node.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["run_summary"]


def run_summary(plan, sink, nodes: dict, wall: float, control_bytes: int,
                launcher_dropped: dict | None = None) -> dict:
    """The summary of a run (server modes add their own fields).  ``launcher_dropped``:
    what the launcher dropped, by reason (malformed reports, strangers' messages)."""
    cfg = plan.config
    failed = {str(h.label): h.reason for h in nodes.values() if h.state == "failed"}
    # a failed node's last accuracy is of a model that did not finish: left out
    dead = {h.id for h in nodes.values() if h.state == "failed"}
    base = sink.summary(exclude=dead)
    finals = [h.final for h in nodes.values() if h.final]
    num_params = finals[0].get("num_params") if finals else None
    # model messages and their bytes from the same processes' counters (a dead one's
    # records stay, its counters do not): bits a parameter, as sent
    messages = sum(f.get("model_messages", 0) for f in finals)
    counted = sum(f.get("bytes_sent", 0) for f in finals if f.get("model_messages"))
    dense = 4 * num_params * messages if num_params else 0
    # every record's bytes, and what finished processes sent after their last record;
    # a dead process's bytes after its last record are unknown
    tail = {h.id: int(h.final.get("bytes_sent_unrecorded", 0)) for h in nodes.values()
            if h.final}
    sent = base["bytes_sent_total"] + sum(tail.values())
    received = base["bytes_received_total"] + sum(
        int(f.get("bytes_received_unrecorded", 0)) for f in finals)
    out = dict(plan.summary_base)
    out.update({
        "dataset": cfg.dataset, "model": cfg.model, "partition": cfg.partition,
        # a server mode's codec as its strategy resolved it (stc: stc:0.01+golomb)
        "compression": getattr(plan.specs[-1].options, "codec_up", cfg.compression),
        "num_params": num_params,
        "accuracy_mean": base["accuracy_mean"], "accuracy_min": base["accuracy_min"],
        "accuracy_max": base["accuracy_max"],
        "bytes_sent_total": sent,
        "bytes_received_total": received,
        "bytes_sent_counted_by_nodes": int(sum(f.get("bytes_sent", 0) for f in finals)),
        "bits_per_param_mean": 8 * counted / (dense / 4) if dense else None,
        "compression_ratio": dense / counted if dense and counted else None,
        "handshake_bytes": int(sum(f.get("handshake_bytes", 0) for f in finals)),
        "control_bytes": control_bytes,
        # node to node on the wire: messages with ZMTP framing, plus connection set-up
        "wire_bytes_total": int(sum(f.get("wire_bytes", 0) + f.get("setup_bytes", 0)
                                    for f in finals)),
        "framing_bytes_total": int(sum(f.get("framing_bytes", 0) for f in finals)),
        "setup_bytes_total": int(sum(f.get("setup_bytes", 0) for f in finals)),
        "misses_total": int(sum(n for f in finals for _, n in f.get("misses", []))),
        "dropped_total": int(sum(sum(f.get("dropped", {}).values()) for f in finals)),
        "dropped": _dropped_by_reason(finals),
        "launcher_dropped": dict(launcher_dropped or {}),
        "secure": bool(cfg.secure),
        "backend": cfg.backend,
        # where the nodes trained (--device): e.g. {"cpu": 8} or {"cuda:0": 4, "cuda:1": 4}
        "devices": dict(sorted(Counter(f["device"] for f in finals
                                       if isinstance(f.get("device"), str)).items())),
        "messages_sent_total": int(sum(f.get("messages_sent", 0) for f in finals)),
        "model_messages_total": int(messages),  # of them, models (not leave, pull, ...)
        "emulated_lost_total": int(sum(f.get("emulated_lost", 0) for f in finals)),
        "failed_nodes": failed,
        # failed because their own training left the model non-finite (errors.Diverged)
        "diverged_nodes": [k for k, why in failed.items()
                           if isinstance(why, str) and why.startswith("diverged:")],
        "restarts": int(sum(getattr(h, "restarts", 0) for h in nodes.values())),
        # per direction and peer: [sender label, receiver label, bytes] (handshake included)
        "bytes_per_link": [[nodes[f["node"]].label, nodes[j].label, n] for f in finals
                           for j, n in f.get("sent_per_peer", []) if j in nodes],
        "wall_s": round(wall, 3),
        **_memory(nodes),
        "accuracy_per_round": base["accuracy_per_round"],
        "consensus_last": base["consensus_last"],
        "accuracy_mean_honest": _honest_mean(plan, sink, dead),
    })
    if cfg.backend == "ray":  # the Ray hosts the nodes were placed on
        out["ray_nodes"] = len({h.ray_node for h in nodes.values() if h.ray_node})
    if plan.closer is not None:
        _server_fields(out, plan, sink, nodes, dead, tail)
    else:  # gossip nodes that finished before the last round (offline when all their
        # neighbours had finished, or the run was stopped), with their last round
        out["ended_early"] = {str(h.label): int(h.last_round) for _, h in sorted(
            nodes.items()) if h.state == "done" and h.last_round < cfg.rounds}
    return out


def _memory(nodes: dict) -> dict:
    """Peak RSS summed over the launcher and every process that hosted nodes (each
    counted once: actors of one host process report the same process), an upper bound
    (forked processes share pages, counted in each); and their proportional set sizes
    at the end, summed: the memory they held together then."""
    from .runtime import peak_rss_bytes, pss_bytes

    per_process: dict = {}
    for h in nodes.values():
        f = h.final
        if f and isinstance(f.get("pid"), int) and isinstance(f.get("peak_rss_bytes"), int):
            key = (h.host, f["pid"])
            peak, pss = per_process.get(key, (0, 0))
            per_process[key] = (max(peak, f["peak_rss_bytes"]),
                                max(pss, int(f.get("pss_bytes") or 0)))
    return {"peak_rss_bytes": peak_rss_bytes() + sum(p for p, _ in per_process.values()),
            "pss_bytes_total": pss_bytes() + sum(q for _, q in per_process.values()),
            "node_processes": len(per_process)}


def _dropped_by_reason(finals: list) -> dict:
    """Messages (and refused handshakes) the nodes dropped, summed per reason."""
    out: dict = {}
    for f in finals:
        for reason, n in (f.get("dropped") or {}).items():
            out[reason] = out.get(reason, 0) + int(n)
    return dict(sorted(out.items()))


def _honest_mean(plan, sink, failed: set):
    """Mean final accuracy of the honest nodes (those whose behaviour is honest) that
    did not fail."""
    honest = {s.id for s in plan.specs if s.role != "coordinator"
              and s.learn.behaviour == "honest"} - failed
    acc = [a for node, a in sink.accuracy_by_node().items() if node in honest]
    return float(np.mean(acc)) if acc else None


def _server_fields(summary: dict, plan, sink, nodes: dict, dead: set, tail: dict) -> None:
    """Bytes up and down, per-round global accuracy and the strategy's own fields."""
    specs = plan.specs
    coord_id = plan.closer
    labels = {s.id: s.label for s in specs}
    # From the records, so that a restarted coordinator's earlier rounds count too,
    # plus what each finished process sent after its last record (as bytes_sent_total).
    coord_recs = sink.closer_records  # the sink's closer is the coordinator
    summary["bytes_down_total"] = int(sink.closer_bytes_sent + tail.get(coord_id, 0))
    summary["bytes_up_total"] = int(sink.bytes_sent - sink.closer_bytes_sent
                                    + sum(n for i, n in tail.items() if i != coord_id))
    for key in ("global_accuracy", "cluster_accuracy", "ensemble_accuracy"):
        rows = [[r["round"], r[key]] for r in coord_recs if r.get(key) is not None]
        if rows:
            summary[f"{key}_per_round"] = rows
    summary["bytes_per_round"] = [[r["round"], r["bytes_sent"], r["bytes_received"]]
                                  for r in coord_recs]
    # the replies the coordinator asked for, and those that came within the round
    summary["participants_total"] = int(sum(r.get("participants") or 0 for r in coord_recs))
    summary["replies_ok_total"] = int(sum(r.get("replies_ok") or 0 for r in coord_recs))
    # and why the others did not count, by reason: timeout, offline, nonfinite (NaN, inf
    # or too large), undecodable, desync (an STC worker behind), ... (the rounds' failed)
    summary["replies_failed"] = dict(sorted(Counter(
        f[1] for r in coord_recs for f in (r.get("failed") or [])
        if isinstance(f, list) and len(f) == 2 and isinstance(f[1], str)).items()))
    # instructions workers behind applied but did not answer: newer ones were queued
    summary["instructions_skipped_total"] = int(sum(
        h.final.get("instructions_skipped", 0) for i, h in nodes.items() if i != coord_id))
    # workers' final accuracy, split by behaviour (clean = honest workers)
    acc = sink.accuracy_by_node()
    behaviour = {s.id: s.learn.behaviour for s in specs if s.role == "worker"}
    clean = [a for i, a in acc.items() if behaviour.get(i) == "honest" and i not in dead]
    summary["accuracy_clean_mean"] = float(np.mean(clean)) if clean else None
    summary["behaviours"] = {str(labels[i]): b for i, b in behaviour.items() if b != "honest"}
    summary["final_accuracy_by_worker"] = {str(labels[i]): a for i, a in sorted(acc.items())
                                           if i in behaviour and i not in dead}
    if plan.config.partition.startswith("groups:"):
        by_group: dict = {}
        for i, g in zip(behaviour, specs[-1].server.groups):
            by_group.setdefault(g, []).append(labels[i])
        summary["groups"] = [by_group[g] for g in sorted(by_group)]
    final = nodes[coord_id].final if coord_id in nodes else None  # None: it never said bye
    summary.update((final or {}).get("strategy", {}))
