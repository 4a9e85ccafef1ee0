"""A run folder's records as curves: what ``p2pfl plot`` draws and compares.

Reads ``metrics.jsonl`` (one JSON record per node and round; a torn or damaged
line is skipped), ``summary.json`` (or, while a run has none, ``config.json``)
and turns them into per-node series, the mean curve and a server run's own
accuracy curve.  Nothing here draws.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict

from p2pfl.errors import UsageError

__all__ = ["read_records", "read_summary", "node_series", "mean_curve", "global_curve",
           "run_title", "finite", "is_coordinator"]


def read_records(run_dir):
    """The per-node records of ``metrics.jsonl``; UsageError if there are none."""
    if not os.path.isdir(run_dir):
        what = "is not a folder" if os.path.exists(run_dir) else "does not exist"
        raise UsageError(f"run folder {run_dir!r} {what}")
    path = os.path.join(run_dir, "metrics.jsonl")
    try:  # a torn line's bad bytes fail its JSON below, not the whole file
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    records, skipped = [], []
    for number, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:  # a truncated last line of a live or killed run, or damage
            rec = None
        if (isinstance(rec, dict) and "round" in rec and type(rec.get("node")) in (int, str)):
            records.append(rec)
        elif line.strip():
            skipped.append(number)
    if not records:
        raise UsageError(f"{path} holds no metrics records")
    if skipped:  # the plots leave them out: say so
        print(f"p2pfl: warning: {path}: skipped {len(skipped)} line(s) that are not a "
              f"record, line {skipped[0]} the first" + (" (the last line, torn: a run in "
              "progress or killed?)" if skipped == [len(lines)] else ""), file=sys.stderr)
    return records


def read_json(run_dir, name):
    """``name`` in ``run_dir`` as a dict; ``{}`` when absent or unreadable."""
    try:
        with open(os.path.join(run_dir, name), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_summary(run_dir):
    """``summary.json``; while a run has none (in progress, or its launcher killed), what
    ``config.json`` says of the run (mode, dataset, model, nodes, the rounds planned)."""
    summary = read_json(run_dir, "summary.json")
    if summary:
        return summary
    config = read_json(run_dir, "config.json")
    resolved = config.get("resolved") if isinstance(config.get("resolved"), dict) else {}
    return {k: v for k, v in dict(config, nodes=resolved.get("nodes"),
                                  algorithm=resolved.get("algorithm")).items()
            if k in ("mode", "algorithm", "dataset", "model", "nodes", "rounds")}


def is_coordinator(rec):
    return rec.get("node") == "coordinator" or rec.get("role") == "coordinator"


def finite(value):
    """``value`` as a finite float, or None."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def node_key(node):
    return (0, node, "") if isinstance(node, int) else (1, 0, str(node))


def node_series(records):
    """Per-node curves from the records.

    Returns ``(nodes, rounds, acc, mb, labels)``: the node ids in order, the
    sorted rounds, ``acc[node][round]`` (evaluated rounds only),
    ``mb[node][i]`` the node's cumulative MB sent up to ``rounds[i]`` and
    ``labels[node]``.
    """
    rows = {}  # (node, round) -> record; a repeated record replaces the earlier one
    sent = defaultdict(float)  # (node, round) -> MB: every record's, each counts since the last
    for rec in records:
        rnd = finite(rec["round"])
        if rnd is None or is_coordinator(rec):
            continue
        rows[(rec["node"], int(rnd))] = rec
        sent[(rec["node"], int(rnd))] += max(0.0, finite(rec.get("bytes_sent")) or 0.0) / 1e6
    nodes = sorted({node for node, _ in rows}, key=node_key)
    rounds = sorted({rnd for _, rnd in rows})
    acc = {node: {} for node in nodes}
    mb = {}
    labels = {}
    for node in nodes:
        total, cumulative = 0.0, []
        for rnd in rounds:
            rec = rows.get((node, rnd))
            if rec is not None:
                total += sent[(node, rnd)]
                a = finite(rec.get("accuracy"))
                if a is not None:
                    acc[node][rnd] = a
                label = rec.get("label")
                labels.setdefault(node, str(node if label is None else label))
            cumulative.append(total)
        mb[node] = cumulative
    return nodes, rounds, acc, mb, labels


def mean_curve(nodes, rounds, acc, mb):
    """``(rounds, mean MB, mean accuracy)`` over the rounds any node evaluated."""
    out_r, out_mb, out_acc = [], [], []
    for i, rnd in enumerate(rounds):
        values = [acc[node][rnd] for node in nodes if rnd in acc[node]]
        if values:
            out_r.append(rnd)
            out_mb.append(sum(mb[node][i] for node in nodes) / len(nodes))
            out_acc.append(sum(values) / len(values))
    return out_r, out_mb, out_acc


#: A server run's own accuracy curve: the key in summary.json (per round) and in the
#: coordinator's records, and its legend label.
SERVER_CURVES = (("global_accuracy", "global model"),
                  ("cluster_accuracy", "cluster models (weighted)"),
                  ("ensemble_accuracy", "ensemble (public set)"))


def global_curve(summary, records):
    """The server-mode model's ``(rounds, accuracies, label)``: the global model's, a CFL
    run's clusters', an FD run's ensemble's; None in gossip.  From summary.json, or from
    the coordinator's records while a run has none (live, or its launcher killed).  Not
    ``accuracy_per_round``: that is the workers' mean, each evaluated before it trained,
    on the previous round's model."""
    coordinator = [r for r in records if is_coordinator(r)]
    if summary.get("mode") == "gossip" or not coordinator:
        return None
    candidates = [(summary.get(key + "_per_round"), label) for key, label in SERVER_CURVES]
    if not any(rows for rows, _ in candidates):  # no summary yet: the records have them
        candidates = [([[r["round"], r[key]] for r in coordinator if key in r], label)
                      for key, label in SERVER_CURVES]
    for rows, label in candidates:
        xs, ys = [], []
        for item in rows if isinstance(rows, list) else []:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                r, a = finite(item[0]), finite(item[1])
                if r is not None and a is not None:
                    xs.append(r)
                    ys.append(a)
        if xs:
            return xs, ys, label
    return None


def run_title(summary, run_dir):
    parts = []
    for key in ("mode", "algorithm", "dataset", "model"):
        if summary.get(key) and str(summary[key]) not in parts:
            parts.append(str(summary[key]))
    if summary.get("nodes"):
        parts.append(f"{summary['nodes']} nodes")
    return " | ".join(parts) or os.path.basename(os.path.normpath(run_dir))
