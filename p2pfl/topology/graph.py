"""Validation and relabelling of loaded graphs."""

from __future__ import annotations

import networkx as nx

from p2pfl.errors import TopologyError
from p2pfl.labels import first_few

from .generators import MAX_EDGES, MAX_NODES, _need

__all__ = ["MAX_NODES", "validate", "relabel", "edges_as_run"]


def validate(G):
    """Check that ``G`` is usable for gossip and return a cleaned copy.

    Parameters
    ----------
    G : networkx.Graph
        Undirected graph; a multigraph is collapsed, self-loops are dropped.

    Returns
    -------
    graph : networkx.Graph
        Simple undirected copy of ``G`` (first parallel edge's attributes kept).
    warnings : list of str
        One line per repair made.

    Raises
    ------
    TopologyError
        Directed graph, fewer than 2 or more than :data:`MAX_NODES` nodes, or a
        disconnected graph.
    """
    if not isinstance(G, nx.Graph):
        raise TopologyError(f"topology must be a networkx graph, got {type(G).__name__}")
    if G.is_directed():
        raise TopologyError(
            f"directed graphs are not supported yet (got one with {G.number_of_nodes()} "
            "nodes); use an undirected graph")
    _need(G.number_of_nodes() >= 2,
          f"topology needs at least 2 nodes, got {G.number_of_nodes()}")
    _need(G.number_of_nodes() <= MAX_NODES,
          f"topology has {G.number_of_nodes()} nodes; at most {MAX_NODES} are supported")
    warnings = []
    H = nx.Graph()
    H.graph.update(G.graph)
    H.add_nodes_from(G.nodes(data=True))
    parallel = 0
    for u, v, data in G.edges(data=True):
        if H.has_edge(u, v):
            parallel += 1
        else:
            H.add_edge(u, v, **data)
    if parallel:
        warnings.append(f"collapsed {parallel} parallel edge(s) (kept the first edge's attributes)")
    loops = list(nx.selfloop_edges(H))
    if loops:
        H.remove_edges_from(loops)
        warnings.append(f"ignored {len(loops)} self-loop(s)")
    _need(H.number_of_edges() <= MAX_EDGES,  # parallel edges and loops left out
          f"topology has {H.number_of_edges():,} edges; at most {MAX_EDGES:,} are supported")
    if not nx.is_connected(H):
        parts = sorted(nx.connected_components(H), key=len, reverse=True)
        shown = first_few(len(c) for c in parts)
        raise TopologyError(f"topology is disconnected: {len(parts)} components (sizes "
                            f"{shown}); {_smallest(parts[-1])}")
    return H, warnings


def _smallest(part) -> str:
    """Which nodes the smallest component holds (a node no edge or phase names, often)."""
    names = sorted(part, key=str)
    shown = first_few(names)
    return (f"node {shown} has no link" if len(names) == 1
            else f"the smallest holds nodes {shown}")


def relabel(G):
    """Relabel nodes to ``0..n-1`` in the graph's node iteration order.

    Returns
    -------
    graph : networkx.Graph
        Copy with integer nodes; node, edge and graph attributes preserved.
    labels : list
        ``labels[i]`` is the original label of node ``i``.
    """
    labels = list(G.nodes())
    mapping = {u: i for i, u in enumerate(labels)}
    return nx.relabel_nodes(G, mapping, copy=True), labels


def edges_as_run(G) -> list:
    """``G``'s edges as :func:`validate` leaves them (no self-loops, a multigraph's
    parallel edges once, with the first one's data), for a run's record: ``[u, v]``, or
    ``[u, v, {attributes}]`` where the edge has attributes JSON writes as they are
    (weights, which ``--mixing`` may read); labels as :func:`p2pfl.spec.plain_label`."""
    import numpy as np

    from p2pfl.spec import plain_label

    seen, ran = set(), []
    for u, v, data in G.edges(data=True):
        if u == v or frozenset((u, v)) in seen:
            continue
        seen.add(frozenset((u, v)))
        attrs = {k: x.item() if isinstance(x, np.generic) else x for k, x in data.items()}
        attrs = {k: x for k, x in attrs.items()
                 if isinstance(k, str) and isinstance(x, (bool, int, float, str))}
        ran.append([plain_label(u), plain_label(v)] + ([attrs] if attrs else []))
    return ran
