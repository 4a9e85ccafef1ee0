"""Several runs on one set of axes: ``p2pfl plot RUN RUN ... --out DIR``.

Gossip against server FL, one codec against another, byte for byte.  Each run is one
line: its accuracy per round (gossip: the nodes' mean, ``accuracy_per_round``; a server
mode: the global, cluster-weighted or ensemble accuracy of the coordinator's model),
against the round, the megabytes that every node of the run had sent by the end of it
(the records' ``bytes_sent``, summed over nodes and rounds: the whole network's
traffic, log x; at the last round the summary's ``bytes_sent_total``, which adds what
left an emulated uplink after its node's last record), and the wall time at which its
last node finished it.  Writes ``compare_accuracy_vs_round.png``, ``compare_accuracy_vs_mb.png``,
``compare_accuracy_vs_time.png`` and ``compare.json`` (each run's final accuracy,
total megabytes and wall time, and what says it did not finish as planned: its rounds,
failed nodes, ``interrupted``, and whether it has a summary) into ``DIR``.
"""

from __future__ import annotations

import os
from collections import defaultdict

from .errors import UsageError
from .metrics import write_json_atomic
from .plot import plot_curves
from .run_records import (finite, global_curve, mean_curve, node_series, read_records,
                          read_summary)

__all__ = ["compare_runs", "run_curve", "COMPARE_FILES"]

COMPARE_FILES = ("compare_accuracy_vs_round.png", "compare_accuracy_vs_mb.png",
                 "compare_accuracy_vs_time.png", "compare.json")


def run_curve(run_dir: str) -> dict:
    """One run's line: ``rounds``, ``accuracy``, ``mb`` and ``seconds``, one per
    evaluated round, and what labels it (``mode``, ``compression``)."""
    records, summary = read_records(run_dir), read_summary(run_dir)
    sent, ends = defaultdict(float), defaultdict(float)
    for rec in records:
        rnd = rec.get("round")
        if type(rnd) is int:
            sent[rnd] += finite(rec.get("bytes_sent")) or 0.0
            ends[rnd] = max(ends[rnd], finite(rec.get("wall_s")) or 0.0)
    server = global_curve(summary, records)  # the one plot_run draws
    per_round = summary.get("accuracy_per_round")
    if server is not None:
        acc = [(int(r), a) for r, a in zip(*server[:2])]
    elif isinstance(per_round, list):
        acc = [(p[0], finite(p[1])) for p in per_round if isinstance(p, list) and len(p) == 2
               and type(p[0]) is int and finite(p[1]) is not None]
    else:  # no summary (a run still going, or its launcher killed): the records' means
        rounds, _, means = mean_curve(*node_series(records)[:4])
        acc = list(zip(rounds, means))
    if not acc:
        raise UsageError(f"run folder {run_dir!r} has no accuracy to compare (an "
                         "exchange-only run, or one stopped before its first evaluation)")
    total, cumulative = 0.0, {}
    for rnd in sorted(sent):
        total += sent[rnd]
        cumulative[rnd] = total / 1e6
    rounds = [r for r, _ in acc]
    mb = [cumulative.get(r) for r in rounds]
    # what left an emulated uplink after its node's last record (a message counts when
    # it leaves), and a round under way when the run stopped after its last evaluation,
    # are in the summary's total only: the line ends at it
    whole = finite(summary.get("bytes_sent_total"))
    if mb and whole is not None and (mb[-1] is None or whole / 1e6 > mb[-1]):
        mb[-1] = whole / 1e6
    return {"rounds": rounds, "accuracy": [a for _, a in acc],
            "mb": mb, "seconds": [ends.get(r) for r in rounds],
            "mode": summary.get("mode"), "compression": summary.get("compression"),
            # what says a run did not finish as planned: a comparison must not hide it
            "planned": summary.get("rounds"), "failed": sorted(map(str, summary.get(
                "failed_nodes") or {})), "interrupted": summary.get("interrupted") is True,
            "summary": os.path.isfile(os.path.join(run_dir, "summary.json"))}


def _label(run_dir: str, curve: dict, taken: set) -> str:
    name = os.path.basename(os.path.normpath(run_dir)) or run_dir
    what = ", ".join(str(v) for v in (curve["mode"], curve["compression"]) if v)
    label = f"{name} ({what})" if what else name
    while label in taken:  # two folders of one name
        label += "'"
    taken.add(label)
    return label


def compare_runs(run_dirs: list, out_dir: str) -> list[str]:
    """Write the comparison of ``run_dirs`` into ``out_dir``; the paths written."""
    if len(run_dirs) < 2:
        raise UsageError("a comparison needs two run folders or more")
    curves, taken = {}, set()
    for run_dir in run_dirs:
        curve = run_curve(run_dir)
        curves[_label(run_dir, curve, taken)] = curve
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"cannot use output folder {out_dir}: it is a file, not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use output folder {out_dir}: {exc.strerror or exc}") from None
    for name in COMPARE_FILES:  # before any is written: not half a new comparison
        if os.path.isdir(os.path.join(out_dir, name)):
            raise UsageError(f"cannot write {os.path.join(out_dir, name)}: it is a folder")
    paths = []
    for name, x, xlabel, logx in (
            (COMPARE_FILES[0], "rounds", "round", False),
            (COMPARE_FILES[1], "mb", "MB sent by all nodes (cumulative)", True),
            (COMPARE_FILES[2], "seconds", "wall time (s)", False)):
        series = {label: (c[x], c["accuracy"]) for label, c in curves.items()}
        paths.append(plot_curves(series, os.path.join(out_dir, name), xlabel,
                                 "test accuracy", logx=logx, title="comparison"))
    table = [{"run": os.path.abspath(d), "label": label, "mode": c["mode"],
              "compression": c["compression"], "final_round": c["rounds"][-1],
              "final_accuracy": c["accuracy"][-1], "mb_sent": c["mb"][-1],
              "wall_s": c["seconds"][-1], "rounds": c["planned"], "failed_nodes": c["failed"],
              "interrupted": c["interrupted"], "summary": c["summary"]}
             for d, (label, c) in zip(run_dirs, curves.items())]
    path = os.path.join(out_dir, COMPARE_FILES[3])
    try:
        write_json_atomic(path, table)
    except OSError as exc:  # a full disk, say: one line, as a PNG's failure is
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return paths + [path]
