"""A topology as a PNG: ``p2pfl topology SPEC --png FILE``.

A static graph is one drawing: its nodes, and its edges as lines as wide as their
mixing weight w_ij.  A time-varying topology (:mod:`~p2pfl.topology.schedules`) is one
panel a phase, up to :data:`MAX_PANELS`: a phase's graph, or, where it is not symmetric
(one peer a round), an arrow from each node heard to the node that hears it.  Nodes
sit on a circle (``circular``, the default for schedules, whose shifts then read at a
glance) or where a seeded force-directed layout puts them
(``spring``, the default for graphs).  Labels are drawn up to :data:`MAX_LABELS` nodes.
Only matplotlib's Agg canvas is used (:mod:`p2pfl.plot`).
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from .errors import UsageError
from .plot import _save

__all__ = ["draw_topology", "check_drawable", "panels", "LAYOUTS", "MAX_DRAWN_NODES"]

LAYOUTS = ("auto", "circular", "spring")
#: The most nodes drawn: beyond, a drawing is a blot (and a spring layout takes long).
MAX_DRAWN_NODES = 1024
MAX_LABELS = 64
MAX_PANELS = 8


def panels(topo) -> list:
    """``[(title, [(u, v, width), ...], directed), ...]``: the drawing's panels.  A
    graph's edges with their w_ij; a schedule's phases with theirs, as arrows heard →
    hearer where a phase is not symmetric (one peer a round), else as lines."""
    sched = topo.schedule
    if sched is None:
        return [("", _lines(topo.mixing), False)]
    out = []
    for k, ph in enumerate(sched.phases[:MAX_PANELS]):
        rows, cols = ph.entries()
        arrows = [(int(j), int(i), float(w)) for i, j, w in zip(rows, cols, ph.data)]
        symmetric = {(u, v) for u, v, _ in arrows} == {(v, u) for u, v, _ in arrows}
        edges = _lines(ph) if symmetric else arrows
        out.append((f"phase {k + 1} (rounds {k + 1}, {k + 1 + sched.period}, ...)", edges,
                    not symmetric))
    return out


def _lines(W) -> list:
    """A symmetric :class:`~p2pfl.topology.Mixing`'s off-diagonal entries, each edge once
    (u < v)."""
    rows, cols = W.entries()
    keep = rows < cols
    return [(int(u), int(v), float(w)) for u, v, w in zip(rows[keep], cols[keep], W.data[keep])]


def _positions(topo, layout: str) -> np.ndarray:
    if layout == "auto":
        layout = "circular" if topo.schedule is not None else "spring"
    n = topo.n
    if layout == "circular":
        angle = np.pi / 2 - 2 * np.pi * np.arange(n) / n  # node 0 at the top, clockwise
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)
    pos = nx.spring_layout(topo.graph, seed=0)
    return np.array([pos[i] for i in range(n)])


def check_drawable(topo, layout: str) -> None:
    """UsageError for an unknown layout or a topology too large to draw."""
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if topo.n > MAX_DRAWN_NODES:
        raise UsageError(f"a drawing of {topo.n} nodes would be a blot; at most "
                         f"{MAX_DRAWN_NODES} are drawn")


def draw_topology(topo, path, layout: str = "auto", title: str | None = None) -> str:
    """Write ``topo`` (a :class:`~p2pfl.topology.Topology`) to ``path`` as a PNG and
    return ``path``.  Raises UsageError for an unknown layout, a topology of more than
    :data:`MAX_DRAWN_NODES` nodes, or matplotlib missing."""
    check_drawable(topo, layout)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install matplotlib") from None
    pos = _positions(topo, layout)
    parts = panels(topo)
    cols = min(len(parts), 4)
    rows = math.ceil(len(parts) / cols)
    fig = Figure(figsize=(4.2 * cols if len(parts) > 1 else 7, 4.4 * rows + 0.4), dpi=110)
    FigureCanvasAgg(fig)
    heaviest = max((w for _, edges, _ in parts for _, _, w in edges), default=1.0)
    for idx, (name, edges, directed) in enumerate(parts):
        ax = fig.add_subplot(rows, cols, idx + 1)
        if directed and topo.n <= MAX_LABELS * 2:
            for u, v, _ in edges:
                ax.annotate("", xy=pos[v], xytext=pos[u],
                            arrowprops={"arrowstyle": "-|>", "color": "tab:blue", "lw": 1.0,
                                        "shrinkA": 6, "shrinkB": 6})
        elif edges:
            segs = [(pos[u], pos[v]) for u, v, _ in edges]
            widths = [0.4 + 2.6 * w / heaviest for _, _, w in edges]
            ax.add_collection(LineCollection(segs, linewidths=widths, colors="tab:blue",
                                             alpha=0.7))
        ax.scatter(pos[:, 0], pos[:, 1], s=max(4.0, 120.0 / max(1.0, topo.n / 16)),
                   c="tab:orange", edgecolors="black", linewidths=0.5, zorder=3)
        if topo.n <= MAX_LABELS:
            for i, (x, y) in enumerate(pos):
                ax.text(x, y, str(topo.labels[i]), fontsize=7, ha="center", va="center",
                        zorder=4)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.margins(0.08)
        ax.axis("off")
    if topo.schedule is not None and topo.schedule.period > MAX_PANELS:
        title = f"{title or ''} (phases 1-{MAX_PANELS} of {topo.schedule.period})".strip()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
