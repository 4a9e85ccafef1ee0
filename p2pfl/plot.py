"""PNG plots of a run folder and of benchmark comparisons.

:func:`plot_run` reads a run's ``metrics.jsonl`` (one JSON record per node and
round) and ``summary.json`` and writes two figures into the run folder:

``accuracy_vs_round.png``
    Test accuracy against round: a thin line per node, a thick mean line
    and, in server modes, the global model's accuracy.  Above
    :data:`MAX_NODE_LINES` nodes the nodes are drawn as their spread instead:
    a band from the lowest to the highest accuracy of each round and a darker
    one from the 10th to the 90th percentile.
``accuracy_vs_mb.png``
    Test accuracy against the cumulative megabytes a node has sent (log x
    axis): a thin line per node (or the spread, at the mean's megabytes) and
    the mean accuracy against the mean cumulative megabytes.
``accuracy_vs_time.png``
    Test accuracy against wall time since the start (the records' ``wall_s``,
    what time-to-accuracy is read from on emulated slow links): a thin line
    per node (or the spread) and the mean accuracy against the latest node's
    time.

:func:`plot_curves` draws any named ``(x, y)`` series on one set of axes, for
benchmarks comparing runs.  Every PNG is written to a temporary file in the
target folder and then renamed, so a reader never sees half a file.

matplotlib is imported lazily and only its Agg canvas is used: no display is
needed and pyplot's global state (and the caller's backend) is left alone.
"""

from __future__ import annotations

import os

from p2pfl.atomic import write_atomic
from p2pfl.errors import UsageError
from p2pfl.run_records import (finite, global_curve, is_coordinator, mean_curve,
                               node_series, read_records, read_summary, run_title)

__all__ = ["plot_run", "plot_curves", "ROUND_PNG", "MB_PNG", "TIME_PNG", "RUN_PNGS",
           "MAX_NODE_LINES"]

#: File names written by :func:`plot_run` inside the run folder.
ROUND_PNG = "accuracy_vs_round.png"
MB_PNG = "accuracy_vs_mb.png"
TIME_PNG = "accuracy_vs_time.png"
#: All of them: a new run in the folder removes an earlier run's (they would show it).
RUN_PNGS = (ROUND_PNG, MB_PNG, TIME_PNG)

_MAX_LEGEND_NODES = 16
#: The most nodes drawn as a line each; more are drawn as their spread (1,024 lines
#: of a run were one coloured mass, and took 2 s to draw).
MAX_NODE_LINES = 64
_NODE_STYLE = {"linewidth": 0.8, "alpha": 0.55, "marker": ".", "markersize": 2}
_MEAN_STYLE = {"linewidth": 2.6, "color": "black", "zorder": 5}
_GLOBAL_STYLE = {"linewidth": 2.0, "color": "tab:red", "linestyle": "--", "zorder": 6}
_BAND_STYLES = (("min–max", {"color": "tab:blue", "alpha": 0.18, "linewidth": 0}),
                ("10–90th percentile", {"color": "tab:blue", "alpha": 0.35, "linewidth": 0}))


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


def _draw_nodes(ax, lines, spread, count):
    """Each node's line ``(xs, ys, label)`` of ``lines``; for more than
    :data:`MAX_NODE_LINES` nodes with an accuracy (``count``, the same in every
    figure), the ``spread``, ``(xs, [the nodes' accuracies at each x])``, as bands
    instead.  Labels go to the legend up to ``_MAX_LEGEND_NODES`` such nodes."""
    if count > MAX_NODE_LINES:
        import numpy as np

        xs, values = spread
        if xs:
            lo_hi = [np.percentile(v, (0, 10, 90, 100)) for v in values]
            for (name, style), (a, b) in zip(_BAND_STYLES, ((0, 3), (1, 2))):
                ax.fill_between(xs, [q[a] for q in lo_hi], [q[b] for q in lo_hi],
                                label=f"{count} nodes, {name}", **style)
        return
    for xs, ys, label in lines:
        ax.plot(xs, ys, label=label if count <= _MAX_LEGEND_NODES else None, **_NODE_STYLE)


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
    records = read_records(run_dir)
    nodes, rounds, acc, mb, labels = node_series(records)
    summary = read_summary(run_dir)
    title = run_title(summary, run_dir)
    mean_r, mean_mb, mean_acc = mean_curve(nodes, rounds, acc, mb)
    values = [[acc[node][r] for node in nodes if r in acc[node]] for r in mean_r]
    count = sum(bool(acc[node]) for node in nodes)  # nodes with an accuracy to draw
    server = global_curve(summary, records)
    if not server and not any(acc[node] for node in nodes):
        raise UsageError(f"{run_dir}: no round recorded a test accuracy (an exchange-only "
                         "run, --local-steps 0?): nothing to plot")

    fig, ax = _figure()
    _draw_nodes(ax, [([r for r, _ in pts], [a for _, a in pts], labels[node])
                     for node in nodes if (pts := sorted(acc[node].items()))],
                (mean_r, values), count)
    if mean_r:
        ax.plot(mean_r, mean_acc, label="mean", **_MEAN_STYLE)
    if server:
        ax.plot(server[0], server[1], label=server[2], **_GLOBAL_STYLE)
    _finish(ax, "round", "test accuracy", title,
            bool(ax.get_legend_handles_labels()[0]))
    written = [_save(fig, os.path.join(run_dir, ROUND_PNG))]

    fig, ax = _figure()
    index = {rnd: i for i, rnd in enumerate(rounds)}
    logx = any(x > 0 for x in mean_mb) or any(
        mb[node][index[rnd]] > 0 for node in nodes for rnd in acc[node])
    lines = []
    for node in nodes:
        pts = sorted(acc[node].items())
        xs, ys = [mb[node][index[r]] for r, _ in pts], [a for _, a in pts]
        if logx:
            xs, ys = _positive(xs, ys)
        if xs:
            lines.append((xs, ys, labels[node]))
    shown = [i for i, x in enumerate(mean_mb) if x > 0 or not logx]
    _draw_nodes(ax, lines, ([mean_mb[i] for i in shown], [values[i] for i in shown]), count)
    xs, ys = _positive(mean_mb, mean_acc) if logx else (mean_mb, mean_acc)
    if xs:
        ax.plot(xs, ys, label="mean", **_MEAN_STYLE)
    if logx:
        ax.set_xscale("log")
    _finish(ax, "cumulative MB sent by the node" if count <= MAX_NODE_LINES else
            "cumulative MB sent by a node (the nodes' mean)", "test accuracy", title,
            bool(ax.get_legend_handles_labels()[0]))
    written.append(_save(fig, os.path.join(run_dir, MB_PNG)))
    written.append(_time_figure(run_dir, records, nodes, acc, labels, title, count))
    return written


def _time_figure(run_dir, records, nodes, acc, labels, title, count) -> str:
    """Accuracy against wall time: per node (or their spread), and the mean at the
    round's latest time."""
    wall = {}
    for rec in records:
        rnd, t = finite(rec.get("round")), finite(rec.get("wall_s"))
        if rnd is not None and t is not None and not is_coordinator(rec):
            wall[(rec["node"], int(rnd))] = t
    fig, ax = _figure()
    rounds = [r for r in sorted({r for node in nodes for r in acc[node]})
              if any((n, r) in wall for n in nodes)]
    values = [[acc[n][r] for n in nodes if r in acc[n]] for r in rounds]
    mean = [(max(wall[(n, r)] for n in nodes if (n, r) in wall), sum(v) / len(v))
            for r, v in zip(rounds, values)]
    lines = [(*zip(*pts), labels[node]) for node in nodes
             if (pts := [(wall[(node, r)], a) for r, a in sorted(acc[node].items())
                         if (node, r) in wall])]
    _draw_nodes(ax, lines, ([t for t, _ in mean], values), count)
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
        pts = [(finite(x), finite(y)) for x, y in zip(xs, ys)]
        pts = [(x, y) for x, y in pts if x is not None and y is not None
               and (x > 0 or not logx)]
        # a run that sent nothing has no point on a log axis: its entry says so
        label = str(name) if pts or not xs else f"{name} (no point on this axis)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label,
                linestyle=styles[(i // 10) % len(styles)], linewidth=1.6,
                marker="o" if len(pts) <= 30 else None, markersize=3)
    if logx:
        ax.set_xscale("log")
    _finish(ax, xlabel, ylabel, title, True)
    return _save(fig, os.fspath(path))
