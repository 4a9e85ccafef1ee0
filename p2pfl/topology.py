"""Communication graphs and gossip mixing weights.

A topology is an undirected, connected :class:`networkx.Graph`.  It can come
from a generator spec string (``"ring:16"``, ``"torus:4x4"``, ...), from a
graph file (GraphML, GML, edge list, adjacency list, node-link JSON) or from
a graph object.  :func:`build` turns any of these into a :class:`Topology`:
an integer-labelled graph, the original labels and a symmetric, doubly
stochastic mixing matrix.

This module knows nothing of sockets or tensors: it takes and returns
networkx graphs and numpy arrays.  Every user-facing problem raises
:class:`p2pfl.errors.TopologyError` with a one-line message.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

__all__ = [
    "GENERATORS", "SCHEMES", "READERS", "Topology",
    "ring", "line", "complete", "star", "torus", "exponential",
    "erdos_renyi", "small_world", "random_regular", "barabasi_albert",
    "load_topology", "validate", "relabel", "mixing_weights", "spectral_gap",
    "build", "describe",
]


# ----------------------------------------------------------------- generators

def _need(ok, message):
    if not ok:
        raise TopologyError(message)


def ring(n):
    """Cycle on ``n >= 2`` nodes (a single edge when ``n == 2``)."""
    _need(n >= 2, f"ring needs at least 2 nodes, got {n}")
    return nx.cycle_graph(n)


def line(n):
    """Path on ``n >= 2`` nodes."""
    _need(n >= 2, f"line needs at least 2 nodes, got {n}")
    return nx.path_graph(n)


def complete(n):
    """Complete graph on ``n >= 2`` nodes."""
    _need(n >= 2, f"complete needs at least 2 nodes, got {n}")
    return nx.complete_graph(n)


def star(n):
    """Star with ``n >= 2`` nodes in total; node 0 is the hub."""
    _need(n >= 2, f"star needs at least 2 nodes, got {n}")
    return nx.star_graph(n - 1)


def torus(rows, cols):
    """Two-dimensional periodic grid with ``rows * cols`` nodes.

    Node ``r * cols + c`` sits at row ``r``, column ``c``.  For
    ``rows, cols >= 3`` the graph is 4-regular; smaller sides give fewer
    distinct neighbours (no self-loops or parallel edges are created).
    """
    _need(rows >= 1 and cols >= 1,
          f"torus sides must be at least 1, got {rows}x{cols}")
    _need(rows * cols >= 2, f"torus needs at least 2 nodes, got {rows}x{cols}")
    G = nx.Graph()
    G.add_nodes_from(range(rows * cols))
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for j in (r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c):
                if j != i:
                    G.add_edge(i, j)
    return G


def exponential(n):
    """Exponential graph: node ``i`` is linked to ``i +- 2**k mod n`` for ``2**k < n``."""
    _need(n >= 2, f"exponential needs at least 2 nodes, got {n}")
    G = nx.Graph()
    G.add_nodes_from(range(n))
    hop = 1
    while hop < n:
        G.add_edges_from((i, (i + hop) % n) for i in range(n))
        hop *= 2
    return G


def _check_prob(name, p):
    _need(0.0 <= p <= 1.0, f"{name} probability P must be in [0, 1], got {p}")


def erdos_renyi(n, p, seed=0):
    """G(n, p) random graph; it may be disconnected (then validation fails)."""
    _need(n >= 2, f"erdos_renyi needs at least 2 nodes, got {n}")
    _check_prob("erdos_renyi", p)
    return nx.gnp_random_graph(n, p, seed=seed)


def small_world(n, k, p, seed=0):
    """Connected Watts-Strogatz graph: even-degree ``k`` ring lattice rewired with prob. ``p``."""
    _need(n >= 3, f"small_world needs at least 3 nodes, got {n}")
    _need(k >= 2 and k % 2 == 0, f"small_world K must be an even number >= 2, got {k}")
    _need(k < n, f"small_world K must be smaller than N, got K={k}, N={n}")
    _check_prob("small_world", p)
    try:
        return nx.connected_watts_strogatz_graph(n, k, p, tries=100, seed=seed)
    except nx.NetworkXError:
        raise TopologyError(
            f"small_world:{n}:{k}:{p} stayed disconnected after 100 tries; "
            "lower P or raise K") from None


def random_regular(d, n, seed=0):
    """Random ``d``-regular graph on ``n`` nodes (``n * d`` even, ``1 <= d < n``)."""
    _need(n >= 2, f"random_regular needs at least 2 nodes, got {n}")
    _need(1 <= d < n, f"random_regular degree D must be in [1, N-1], got D={d}, N={n}")
    _need(n * d % 2 == 0, f"random_regular needs N*D even, got D={d}, N={n}")
    return nx.random_regular_graph(d, n, seed=seed)


def barabasi_albert(n, m, seed=0):
    """Barabasi-Albert preferential attachment graph (``1 <= m < n``)."""
    _need(n >= 2, f"barabasi_albert needs at least 2 nodes, got {n}")
    _need(1 <= m < n, f"barabasi_albert M must be in [1, N-1], got M={m}, N={n}")
    return nx.barabasi_albert_graph(n, m, seed=seed)


#: Generator name -> function.  Spec strings are ``NAME:ARG[:ARG...]``.
GENERATORS = {f.__name__: f for f in (ring, line, complete, star, torus, exponential,
                                       erdos_renyi, small_world, random_regular,
                                       barabasi_albert)}

# Argument placeholders of each spec; a trailing "SEED" is optional.
_SPEC_ARGS = {
    "ring": "N", "line": "N", "complete": "N", "star": "N", "torus": "RxC",
    "exponential": "N", "erdos_renyi": "N:P:SEED", "small_world": "N:K:P:SEED",
    "random_regular": "D:N:SEED", "barabasi_albert": "N:M:SEED",
}


def _usage(name):
    args = _SPEC_ARGS[name].replace(":SEED", "[:SEED]")
    return f"{name}:{args}"


def _parse_arg(name, placeholder, text):
    text = text.strip()
    try:
        if placeholder == "P":
            return float(text)
        if placeholder == "RxC":
            rows, cols = text.lower().split("x")
            return int(rows), int(cols)
        return int(text)
    except ValueError:
        kind = {"P": "a number", "RxC": "of the form RxC (e.g. 4x4)"}
        raise TopologyError(
            f"{name}: {placeholder} must be {kind.get(placeholder, 'an integer')}, "
            f"got {text!r}") from None


def _from_spec(spec, seed):
    name, *args = spec.strip().split(":")
    name = name.strip().lower().replace("-", "_")
    if name not in GENERATORS:
        raise TopologyError(
            f"unknown topology {spec!r}: not a file and not a generator; "
            f"generators: {', '.join(_usage(g) for g in GENERATORS)}")
    placeholders = _SPEC_ARGS[name].split(":")
    random = placeholders[-1] == "SEED"
    if len(args) not in (len(placeholders), len(placeholders) - random):
        raise TopologyError(f"{name} spec takes {_usage(name)}, got {spec!r}")
    values = [_parse_arg(name, ph, a) for ph, a in zip(placeholders, args)]
    if placeholders[0] == "RxC":
        values = list(values[0])
    if random and len(args) < len(placeholders):
        values.append(0 if seed is None else int(seed))
    return GENERATORS[name](*values)


# -------------------------------------------------------------------- readers

def _token(text):
    try:
        return int(text)
    except ValueError:
        return text


def _read_edgelist(path):
    """Edge list: ``u v``, ``u v w`` or ``u v {'weight': w, ...}``; ``#`` comments."""
    G = nx.Graph()
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            parts = raw.split("#", 1)[0].split(None, 2)
            if not parts:
                continue
            if len(parts) == 1:
                G.add_node(_token(parts[0]))
                continue
            u, v, data = _token(parts[0]), _token(parts[1]), {}
            if len(parts) == 3:
                try:
                    rest = parts[2].strip()
                    data = (ast.literal_eval(rest) if rest.startswith("{")
                            else {"weight": float(rest)})
                except (ValueError, SyntaxError):
                    raise ValueError(f"line {lineno}: cannot parse {raw.strip()!r}") from None
                if not isinstance(data, dict):
                    raise ValueError(f"line {lineno}: edge data must be a dict")
            G.add_edge(u, v, **data)
    return G


def _hashable(label):
    return tuple(label) if isinstance(label, list) else label


def _read_node_link(path):
    """Node-link JSON with either a ``links`` or an ``edges`` list."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "nodes" not in data:
        raise ValueError("expected a node-link JSON object with a 'nodes' list")
    G = nx.MultiGraph() if data.get("multigraph") else nx.Graph()
    if data.get("directed"):
        G = G.to_directed()
    G.graph.update(data.get("graph") or {})
    for node in data["nodes"]:
        attrs = dict(node)
        G.add_node(_hashable(attrs.pop("id")), **attrs)
    for link in data.get("links", data.get("edges", [])):  # JSON lists -> tuples
        attrs = dict(link)
        u, v = _hashable(attrs.pop("source")), _hashable(attrs.pop("target"))
        attrs.pop("key", None)
        G.add_edge(u, v, **attrs)
    return G


def _read_gml(path):
    try:
        return nx.read_gml(path)
    except nx.NetworkXError as exc:
        if "label" not in str(exc):
            raise
        return nx.read_gml(path, label="id")


#: File extension -> reader returning a networkx graph.
READERS = {
    ".graphml": nx.read_graphml, ".gml": _read_gml,
    ".edgelist": _read_edgelist, ".edges": _read_edgelist, ".txt": _read_edgelist,
    ".adjlist": nx.read_adjlist, ".json": _read_node_link,
}


def _tidy_labels(G):
    """Read ``"12"`` labels back as ``12``; put all-integer nodes in sorted order.

    File readers and random generators list nodes in edge order; sorting makes
    a graph labelled ``0..n-1`` keep those ids after :func:`relabel`.
    """
    if all(isinstance(u, str) and u.lstrip("-").isdigit() and str(int(u)) == u for u in G):
        G = nx.relabel_nodes(G, {u: int(u) for u in G}, copy=True)
    if not all(isinstance(u, int) for u in G):
        return G
    H = G.__class__()
    H.graph.update(G.graph)
    H.add_nodes_from(sorted(G.nodes(data=True), key=lambda item: item[0]))
    H.add_edges_from(G.edges(data=True, **({"keys": True} if G.is_multigraph() else {})))
    return H


def _read_file(path):
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        raise TopologyError(f"cannot read topology file {path}: it is a directory")
    if ext not in READERS:
        raise TopologyError(
            f"unsupported topology file extension {ext or '(none)'!r} for {path}; "
            f"supported: {', '.join(READERS)}")
    try:
        return _tidy_labels(READERS[ext](path))
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, AttributeError,
            IndexError, nx.NetworkXError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TopologyError(f"cannot read topology file {path}: {reason}") from None


def load_topology(spec, *, seed=None):
    """Load a graph from a graph object, a file or a generator spec.

    Parameters
    ----------
    spec : networkx.Graph, str or os.PathLike
        A graph (copied as is), a path to an existing file whose extension
        is one of :data:`READERS`, or a generator spec such as ``"ring:16"``,
        ``"torus:4x4"`` or ``"erdos_renyi:32:0.2:7"``.  Nodes of files and
        generators are listed in sorted order when all labels are integers.
    seed : int, optional
        Seed for random generators whose spec gives no ``SEED``; 0 if None.

    Returns
    -------
    networkx.Graph
        The graph, not yet validated (see :func:`validate`).

    Raises
    ------
    TopologyError
        Unknown generator, bad spec arguments, or an unreadable file.
    """
    if isinstance(spec, nx.Graph):
        return spec.copy()
    if not isinstance(spec, (str, os.PathLike)):
        raise TopologyError(
            f"topology must be a graph, a file or a spec, got {type(spec).__name__}")
    path = os.fspath(spec)
    if os.path.exists(path):
        return _read_file(path)
    head = path.split(":", 1)[0].strip().lower().replace("-", "_")
    looks_like_file = (os.path.splitext(path)[1].lower() in READERS
                       or os.sep in path or "/" in path)
    if head not in GENERATORS and looks_like_file:
        raise TopologyError(f"cannot read topology file {path}: no such file")
    return _tidy_labels(_from_spec(path, seed))


# ----------------------------------------------------------------- validation

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
        Directed graph, fewer than 2 nodes, or a disconnected graph.
    """
    if not isinstance(G, nx.Graph):
        raise TopologyError(f"topology must be a networkx graph, got {type(G).__name__}")
    if G.is_directed():
        raise TopologyError(
            f"directed graphs are not supported yet (got one with {G.number_of_nodes()} "
            "nodes); use an undirected graph")
    _need(G.number_of_nodes() >= 2,
          f"topology needs at least 2 nodes, got {G.number_of_nodes()}")
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
    if not nx.is_connected(H):
        sizes = sorted((len(c) for c in nx.connected_components(H)), reverse=True)
        shown = ", ".join(map(str, sizes[:5])) + (", ..." if len(sizes) > 5 else "")
        raise TopologyError(
            f"topology is disconnected: {len(sizes)} components (sizes {shown})")
    return H, warnings


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


# ------------------------------------------------------------- mixing weights

#: Mixing schemes accepted by :func:`mixing_weights` (plus ``attr:NAME``).
SCHEMES = ("metropolis", "uniform", "weight", "attr:NAME")


def _adjacency(G, attr=None):
    """Symmetric affinity matrix of an int-labelled graph, self-loops ignored."""
    n = G.number_of_nodes()
    _need(set(G) == set(range(n)),
          "mixing weights need nodes labelled 0..n-1; call relabel() first")
    A = np.zeros((n, n))
    for u, v, data in G.edges(data=True):
        if u == v:
            continue
        a = 1.0 if attr is None else data.get(attr, 1.0)
        try:
            a = float(a)
        except (TypeError, ValueError):
            raise TopologyError(f"edge ({u}, {v}) has non-numeric {attr} {a!r}") from None
        _need(np.isfinite(a) and a >= 0,
              f"edge ({u}, {v}) has {attr} {a}; weights must be finite and non-negative")
        A[u, v] = A[v, u] = a
    return A


def _fill_diagonal(W):
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    return W


def mixing_weights(G, scheme="metropolis"):
    """Symmetric, non-negative, doubly stochastic gossip matrix of ``G``.

    Parameters
    ----------
    G : networkx.Graph
        Undirected graph with nodes ``0..n-1`` (see :func:`relabel`).
    scheme : str
        ``"metropolis"``
            Metropolis-Hastings weights (ALGORITHMS.md, "Peer-to-peer
            gossip"): ``w_ij = 1 / (1 + max(d_i, d_j))`` for each edge and
            ``w_ii = 1 - sum_j w_ij``.
        ``"uniform"``
            ``w_ij = 1 / (1 + d_max)`` for each edge, diagonal fills the row.
        ``"weight"`` or ``"attr:NAME"``
            Weighted Metropolis-Hastings on the edge attribute (``weight``
            or ``NAME``) read as a non-negative affinity ``a_ij`` (missing:
            1).  With ``a`` scaled so its largest value is 1 and
            ``s_i = sum_j a_ij``, ``w_ij = a_ij / (1 + max(s_i, s_j))``.
            Unit affinities give exactly the ``"metropolis"`` matrix; the
            result does not change when all affinities are scaled, and
            ``w_ii >= 1 / (1 + s_i) > 0``.  Zero-affinity edges carry no
            weight, so positive ones must still connect the graph.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64 matrix ``W`` with ``W == W.T``, ``W >= 0`` and
        rows (hence columns) summing to 1.

    Raises
    ------
    TopologyError
        Unknown scheme, negative or non-numeric affinities, or affinities
        whose positive edges do not connect the graph.
    """
    if scheme == "metropolis":
        A = _adjacency(G)
        d = A.sum(axis=1)
        W = A / (1.0 + np.maximum.outer(d, d))
    elif scheme == "uniform":
        A = _adjacency(G)
        W = A / (1.0 + A.sum(axis=1).max())
    elif scheme == "weight" or (isinstance(scheme, str) and scheme.startswith("attr:")
                                and scheme[5:]):
        attr = "weight" if scheme == "weight" else scheme[5:]
        A = _adjacency(G, attr)
        _need(A.max() > 0, f"all edges have {attr} 0; no gossip is possible")
        n_parts = nx.number_connected_components(nx.from_numpy_array(A > 0))
        _need(n_parts == 1, f"edges with positive {attr} leave the graph in {n_parts} components")
        A = A / A.max()
        s = A.sum(axis=1)
        W = A / (1.0 + np.maximum.outer(s, s))
    else:
        raise TopologyError(f"unknown mixing scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    return _fill_diagonal(W)


def spectral_gap(W):
    """Spectral gap ``delta = 1 - |lambda_2(W)|`` of a mixing matrix.

    Parameters
    ----------
    W : array_like
        Square mixing matrix; symmetric ones use ``numpy.linalg.eigvalsh``.

    Returns
    -------
    float
        One minus the second largest eigenvalue modulus, clipped at 0 (1.0
        for a 1x1 matrix).  A larger gap means faster consensus.
    """
    W = np.asarray(W, dtype=float)
    _need(W.ndim == 2 and W.shape[0] == W.shape[1],
          f"mixing matrix must be square, got shape {W.shape}")
    if W.shape[0] < 2:
        return 1.0
    eig = np.linalg.eigvalsh(W) if np.allclose(W, W.T) else np.linalg.eigvals(W)
    moduli = np.sort(np.abs(eig))[::-1]
    return float(max(0.0, 1.0 - moduli[1]))


# ------------------------------------------------------------------- Topology

@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """A validated, integer-labelled graph with its mixing matrix.

    Instances compare by identity.  :func:`build` makes :attr:`weights`
    read-only; copy it before modifying.

    Attributes
    ----------
    graph : networkx.Graph
        Nodes ``0..n-1``.
    labels : list
        ``labels[i]`` is the original label of node ``i``.
    weights : numpy.ndarray
        ``(n, n)`` doubly stochastic mixing matrix.
    warnings : list of str
        Repairs made while validating.
    """

    graph: nx.Graph
    labels: list
    weights: np.ndarray
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def n(self):
        """Number of nodes."""
        return self.graph.number_of_nodes()

    @functools.cached_property
    def spectral_gap(self):
        """Spectral gap of :attr:`weights` (see :func:`spectral_gap`)."""
        return spectral_gap(self.weights)

    def neighbours(self, i):
        """Sorted neighbour ids of node ``i``."""
        return sorted(self.graph.neighbors(i))

    def index(self, label):
        """Integer id of the node whose original label is ``label``."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise TopologyError(f"no node labelled {label!r} in the topology") from None


def build(spec, *, scheme="metropolis", seed=None):
    """Load, validate and relabel a topology and compute its mixing weights.

    Parameters
    ----------
    spec : networkx.Graph, str or os.PathLike
        See :func:`load_topology`.
    scheme : str
        See :func:`mixing_weights`.
    seed : int, optional
        Seed for random generator specs without their own ``SEED``.

    Returns
    -------
    Topology
    """
    G, warnings = validate(load_topology(spec, seed=seed))
    G, labels = relabel(G)
    W = mixing_weights(G, scheme)
    W.flags.writeable = False
    return Topology(G, labels, W, warnings)


def describe(topo):
    """One-line summary: nodes, edges, degrees, diameter (n <= 2000), gap."""
    G = topo.graph
    deg = [d for _, d in G.degree()]
    diameter = nx.diameter(G) if topo.n <= 2000 else "skipped (n > 2000)"
    return (f"{topo.n} nodes, {G.number_of_edges()} edges, degree min/mean/max "
            f"{min(deg)}/{np.mean(deg):.2f}/{max(deg)}, diameter {diameter}, "
            f"spectral gap {topo.spectral_gap:.4g}")
