"""PNG plots of a run folder and of benchmark comparisons.

:func:`plot_run` reads a run's ``metrics.jsonl`` (one JSON record per node and
round) and ``summary.json`` and writes two figures into the run folder:

``accuracy_vs_round.png``
    Test accuracy against round: a thin line per node, a thick mean line
    and, in server modes, the global model's accuracy.
``accuracy_vs_mb.png``
    Test accuracy against the cumulative megabytes a node has sent (log x
    axis): a thin line per node and the mean accuracy against the mean
    cumulative megabytes.
``accuracy_vs_time.png``
    Test accuracy against wall time since the start (the records' ``wall_s``,
    what time-to-accuracy is read from on emulated slow links): a thin line
    per node and the mean accuracy against the latest node's time.

:func:`plot_curves` draws any named ``(x, y)`` series on one set of axes, for
benchmarks comparing runs.  Every PNG is written to a temporary file in the
target folder and then renamed, so a reader never sees half a file.

matplotlib is imported lazily and only its Agg canvas is used: no display is
needed and pyplot's global state (and the caller's backend) is left alone.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

from p2pfl.atomic import write_atomic
from p2pfl.errors import UsageError

__all__ = ["plot_run", "plot_curves", "ROUND_PNG", "MB_PNG", "TIME_PNG"]

#: File names written by :func:`plot_run` inside the run folder.
ROUND_PNG = "accuracy_vs_round.png"
MB_PNG = "accuracy_vs_mb.png"
TIME_PNG = "accuracy_vs_time.png"

_MAX_LEGEND_NODES = 16
_NODE_STYLE = {"linewidth": 0.8, "alpha": 0.55, "marker": ".", "markersize": 2}
_MEAN_STYLE = {"linewidth": 2.6, "color": "black", "zorder": 5}
_GLOBAL_STYLE = {"linewidth": 2.0, "color": "tab:red", "linestyle": "--", "zorder": 6}


# ---------------------------------------------------------------- reading

def _read_records(run_dir):
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
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # a truncated last line of a live or killed run
            continue
        if (isinstance(rec, dict) and "round" in rec and type(rec.get("node")) in (int, str)):
            records.append(rec)
    if not records:
        raise UsageError(f"{path} holds no metrics records")
    return records


def _read_json(run_dir, name):
    """``name`` in ``run_dir`` as a dict; ``{}`` when absent or unreadable."""
    try:
        with open(os.path.join(run_dir, name), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_summary(run_dir):
    """``summary.json``; while a run has none (in progress, or its launcher killed), what
    ``config.json`` says of the run (mode, dataset, model, nodes)."""
    summary = _read_json(run_dir, "summary.json")
    if summary:
        return summary
    config = _read_json(run_dir, "config.json")
    resolved = config.get("resolved") if isinstance(config.get("resolved"), dict) else {}
    return {k: v for k, v in dict(config, nodes=resolved.get("nodes"),
                                  algorithm=resolved.get("algorithm")).items()
            if k in ("mode", "algorithm", "dataset", "model", "nodes")}


def _is_coordinator(rec):
    return rec.get("node") == "coordinator" or rec.get("role") == "coordinator"


def _number(value):
    """``value`` as a finite float, or None."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _node_key(node):
    return (0, node, "") if isinstance(node, int) else (1, 0, str(node))


def _series(records):
    """Per-node curves from the records.

    Returns ``(nodes, rounds, acc, mb, labels)``: the node ids in order, the
    sorted rounds, ``acc[node][round]`` (evaluated rounds only),
    ``mb[node][i]`` the node's cumulative MB sent up to ``rounds[i]`` and
    ``labels[node]``.
    """
    rows = {}  # (node, round) -> record; a repeated record replaces the earlier one
    sent = defaultdict(float)  # (node, round) -> MB: every record's, each counts since the last
    for rec in records:
        rnd = _number(rec["round"])
        if rnd is None or _is_coordinator(rec):
            continue
        rows[(rec["node"], int(rnd))] = rec
        sent[(rec["node"], int(rnd))] += max(0.0, _number(rec.get("bytes_sent")) or 0.0) / 1e6
    nodes = sorted({node for node, _ in rows}, key=_node_key)
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
                a = _number(rec.get("accuracy"))
                if a is not None:
                    acc[node][rnd] = a
                label = rec.get("label")
                labels.setdefault(node, str(node if label is None else label))
            cumulative.append(total)
        mb[node] = cumulative
    return nodes, rounds, acc, mb, labels


def _mean_curve(nodes, rounds, acc, mb):
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
_SERVER_CURVES = (("global_accuracy", "global model"),
                  ("cluster_accuracy", "cluster models (weighted)"),
                  ("ensemble_accuracy", "ensemble (public set)"))


def _global_curve(summary, records):
    """The server-mode model's ``(rounds, accuracies, label)``: the global model's, a CFL
    run's clusters', an FD run's ensemble's; None in gossip.  From summary.json, or from
    the coordinator's records while a run has none (live, or its launcher killed).  Not
    ``accuracy_per_round``: that is the workers' mean, each evaluated before it trained,
    on the previous round's model."""
    coordinator = [r for r in records if _is_coordinator(r)]
    if summary.get("mode") == "gossip" or not coordinator:
        return None
    candidates = [(summary.get(key + "_per_round"), label) for key, label in _SERVER_CURVES]
    if not any(rows for rows, _ in candidates):  # no summary yet: the records have them
        candidates = [([[r["round"], r[key]] for r in coordinator if key in r], label)
                      for key, label in _SERVER_CURVES]
    for rows, label in candidates:
        xs, ys = [], []
        for item in rows if isinstance(rows, list) else []:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                r, a = _number(item[0]), _number(item[1])
                if r is not None and a is not None:
                    xs.append(r)
                    ys.append(a)
        if xs:
            return xs, ys, label
    return None


def _title(summary, run_dir):
    parts = []
    for key in ("mode", "algorithm", "dataset", "model"):
        if summary.get(key) and str(summary[key]) not in parts:
            parts.append(str(summary[key]))
    if summary.get("nodes"):
        parts.append(f"{summary['nodes']} nodes")
    return " | ".join(parts) or os.path.basename(os.path.normpath(run_dir))


# ---------------------------------------------------------------- drawing

def _figure():
    """A new ``(figure, axes)`` pair drawn with the Agg canvas."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path):
    """Write ``fig`` to ``path`` as PNG, atomically."""
    try:
        return write_atomic(path, lambda fh: fig.savefig(fh, format="png"))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _finish(ax, xlabel, ylabel, title, legend):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if legend:
        ax.legend(fontsize="small", ncol=2 if len(ax.get_legend_handles_labels()[0]) > 8 else 1)


def _positive(xs, ys):
    """Drop points a log axis cannot show (x <= 0)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x > 0]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run_dir: str) -> list[str]:
    """Write ``accuracy_vs_round.png`` and ``accuracy_vs_mb.png`` into ``run_dir``.

    Parameters
    ----------
    run_dir : str
        A run folder with ``metrics.jsonl`` and (optionally) ``summary.json``.

    Returns
    -------
    list of str
        The paths written.

    Raises
    ------
    UsageError
        Missing folder, missing, unreadable or empty ``metrics.jsonl``, no
        accuracy in it, or matplotlib not installed.
    """
    run_dir = os.fspath(run_dir)
    records = _read_records(run_dir)
    nodes, rounds, acc, mb, labels = _series(records)
    summary = _read_summary(run_dir)
    title = _title(summary, run_dir)
    legend_nodes = len(nodes) <= _MAX_LEGEND_NODES
    mean_r, mean_mb, mean_acc = _mean_curve(nodes, rounds, acc, mb)
    global_curve = _global_curve(summary, records)
    if not global_curve and not any(acc[node] for node in nodes):
        raise UsageError(f"{run_dir}: no round recorded a test accuracy (an exchange-only "
                         "run, --local-steps 0?): nothing to plot")

    fig, ax = _figure()
    for node in nodes:
        pts = sorted(acc[node].items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts],
                    label=labels[node] if legend_nodes else None, **_NODE_STYLE)
    if mean_r:
        ax.plot(mean_r, mean_acc, label="mean", **_MEAN_STYLE)
    if global_curve:
        ax.plot(global_curve[0], global_curve[1], label=global_curve[2], **_GLOBAL_STYLE)
    _finish(ax, "round", "test accuracy", title,
            bool(ax.get_legend_handles_labels()[0]))
    written = [_save(fig, os.path.join(run_dir, ROUND_PNG))]

    fig, ax = _figure()
    index = {rnd: i for i, rnd in enumerate(rounds)}
    logx = any(x > 0 for x in mean_mb) or any(
        mb[node][index[rnd]] > 0 for node in nodes for rnd in acc[node])
    for node in nodes:
        pts = sorted(acc[node].items())
        xs, ys = [mb[node][index[r]] for r, _ in pts], [a for _, a in pts]
        if logx:
            xs, ys = _positive(xs, ys)
        if xs:
            ax.plot(xs, ys, label=labels[node] if legend_nodes else None, **_NODE_STYLE)
    xs, ys = _positive(mean_mb, mean_acc) if logx else (mean_mb, mean_acc)
    if xs:
        ax.plot(xs, ys, label="mean", **_MEAN_STYLE)
    if logx:
        ax.set_xscale("log")
    _finish(ax, "cumulative MB sent by the node", "test accuracy", title,
            bool(ax.get_legend_handles_labels()[0]))
    written.append(_save(fig, os.path.join(run_dir, MB_PNG)))
    written.append(_time_figure(run_dir, nodes, acc, labels, legend_nodes, title))
    return written


def _time_figure(run_dir, nodes, acc, labels, legend_nodes, title) -> str:
    """Accuracy against wall time: per node, and the mean at the round's latest time."""
    wall = {}
    for rec in _read_records(run_dir):
        rnd, t = _number(rec.get("round")), _number(rec.get("wall_s"))
        if rnd is not None and t is not None and not _is_coordinator(rec):
            wall[(rec["node"], int(rnd))] = t
    fig, ax = _figure()
    for node in nodes:
        pts = [(wall[(node, r)], a) for r, a in sorted(acc[node].items()) if (node, r) in wall]
        if pts:
            ax.plot(*zip(*pts), label=labels[node] if legend_nodes else None, **_NODE_STYLE)
    rounds = sorted({r for node in nodes for r in acc[node]})
    mean = [(max(wall[(n, r)] for n in nodes if (n, r) in wall),
             sum(acc[n][r] for n in nodes if r in acc[n]) / sum(r in acc[n] for n in nodes))
            for r in rounds if any((n, r) in wall for n in nodes)]
    if mean:
        ax.plot(*zip(*mean), label="mean", **_MEAN_STYLE)
    _finish(ax, "wall time (s)", "test accuracy", title,
            bool(ax.get_legend_handles_labels()[0]))
    return _save(fig, os.path.join(run_dir, TIME_PNG))


def plot_curves(series: dict, path, xlabel: str, ylabel: str, logx: bool = False,
                title: str | None = None) -> str:
    """Draw named ``(xs, ys)`` series as lines on one set of axes and save a PNG.

    Parameters
    ----------
    series : dict
        ``name -> (xs, ys)``; points whose y is None (or x <= 0 with
        ``logx``) are skipped.
    path : str or os.PathLike
        PNG to write (atomically); its folder is created if needed.
    xlabel, ylabel : str
        Axis labels.
    logx : bool
        Logarithmic x axis.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    UsageError
        No series, a series that is not an ``(xs, ys)`` pair of equal
        lengths, or matplotlib not installed.
    """
    if not series:
        raise UsageError("plot_curves needs at least one series")
    fig, ax = _figure()
    styles = ("-", "--", ":", "-.")  # the colour cycle has 10 colours: vary the line past that
    for i, (name, pair) in enumerate(series.items()):
        try:
            xs, ys = (list(v) for v in pair)
        except (TypeError, ValueError):
            raise UsageError(f"series {name!r} must be an (xs, ys) pair") from None
        if len(xs) != len(ys):
            raise UsageError(f"series {name!r} has {len(xs)} x values but {len(ys)} y values")
        pts = [(_number(x), _number(y)) for x, y in zip(xs, ys)]
        pts = [(x, y) for x, y in pts if x is not None and y is not None
               and (x > 0 or not logx)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=str(name),
                linestyle=styles[(i // 10) % len(styles)], linewidth=1.6,
                marker="o" if len(pts) <= 30 else None, markersize=3)
    if logx:
        ax.set_xscale("log")
    _finish(ax, xlabel, ylabel, title, True)
    return _save(fig, os.fspath(path))
