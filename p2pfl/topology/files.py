"""Topology files: readers by extension and :func:`load_topology`."""

from __future__ import annotations

import ast
import bz2
import gzip
import json
import os

import networkx as nx

from p2pfl.errors import TopologyError

from .generators import GENERATORS, _from_spec

__all__ = ["READERS", "COMPRESSED", "load_topology"]

#: A compressed file's suffix -> how to open it (``graph.edgelist.gz``), as networkx's
#: own readers take them.
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}


def _open_text(path):
    """``path`` as UTF-8 text, decompressed by its suffix (:data:`COMPRESSED`); ``-sig``:
    a byte-order mark is no label."""
    opener = COMPRESSED.get(os.path.splitext(path)[1].lower(), open)
    return opener(path, "rt", encoding="utf-8-sig")


def _token(text):
    """An integer where ``text`` writes one as ``str`` does (``12``, ``-3``), else the
    text: ``int`` also reads ``01``, ``1_0`` and ``\u0661``, labels of their own."""
    if text.isascii() and text.lstrip("-").isdigit():
        try:
            number = int(text)
        except ValueError:  # past int's 4,300 digits
            return text
        if str(number) == text:
            return number
    return text


def _read_edgelist(path):
    """Edge list: ``u v``, ``u v w`` or ``u v {'weight': w, ...}``; ``#`` comments.

    An edge listed twice makes it a multigraph, which ``validate`` collapses with a
    warning (first edge's data kept), as in the other formats."""
    G = nx.MultiGraph()
    with _open_text(path) as fh:
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
    simple = nx.Graph(G)  # a simple graph unless an edge is listed twice
    return G if simple.number_of_edges() < G.number_of_edges() else simple


def _hashable(label):
    return tuple(label) if isinstance(label, list) else label


def _read_node_link(path):
    """Node-link JSON with either a ``links`` or an ``edges`` list."""
    with _open_text(path) as fh:  # a BOM is no JSON error
        data = json.load(fh)
    for key, kind in (("sources", "one_peer"), ("phases", "dynamic")):
        if isinstance(data, dict) and key in data:  # a schedule, not a graph
            raise ValueError(f"it is a schedule file (its {key!r}): give it as {kind}:{path}")
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


def _read_adjlist(path):
    """Adjacency list: ``u v1 v2 ...`` a line; ``#`` comments."""
    with _open_text(path) as fh:
        return nx.parse_adjlist(line for line in fh if line.split("#", 1)[0].strip())


def _read_gml(path):
    """GML, nodes named by their ``label``; by their ``id`` when no node has a label
    (duplicated or partly missing labels are an error, not a silent switch to ids)."""
    graph = nx.read_gml(path, label="id")
    if any("label" in data for _, data in graph.nodes(data=True)):
        return nx.read_gml(path)
    return graph


#: File extension -> reader returning a networkx graph.
READERS = {
    ".graphml": nx.read_graphml, ".gml": _read_gml,
    ".edgelist": _read_edgelist, ".edges": _read_edgelist, ".txt": _read_edgelist,
    ".adjlist": _read_adjlist, ".json": _read_node_link,
}


def _tidy_labels(G):
    """Read ``"12"`` labels back as ``12``; put all-integer nodes in sorted order.

    File readers and random generators list nodes in edge order; sorting makes
    a graph labelled ``0..n-1`` keep those ids after :func:`relabel`.
    """
    if all(isinstance(u, str) and isinstance(_token(u), int) for u in G):
        G = nx.relabel_nodes(G, {u: int(u) for u in G}, copy=True)
    if not all(isinstance(u, int) for u in G):
        return G
    H = G.__class__()
    H.graph.update(G.graph)
    H.add_nodes_from(sorted(G.nodes(data=True), key=lambda item: item[0]))
    H.add_edges_from(G.edges(data=True, **({"keys": True} if G.is_multigraph() else {})))
    return H


def _extension(path) -> str:
    """The format's extension, under a compression suffix (``.edgelist`` of
    ``g.edgelist.gz``)."""
    stem, ext = os.path.splitext(path)
    if ext.lower() in COMPRESSED:
        return os.path.splitext(stem)[1].lower()
    return ext.lower()


def _read_file(path):
    ext = _extension(path)
    if os.path.isdir(path):
        raise TopologyError(f"cannot read topology file {path}: it is a directory")
    if ext not in READERS:
        raise TopologyError(
            f"unsupported topology file extension {ext or '(none)'!r} for {path}; "
            f"supported: {', '.join(READERS)}, each optionally {' or '.join(COMPRESSED)}")
    try:  # networkx's readers open .gz and .bz2 by the name, as _open_text does
        return _tidy_labels(READERS[ext](path))
    except (OSError, EOFError, ValueError, SyntaxError, KeyError, TypeError, AttributeError,
            IndexError, nx.NetworkXError) as exc:  # a cut .gz: EOFError
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TopologyError(f"cannot read topology file {path}: {reason}") from None


def load_topology(spec, *, seed=None):
    """Load a graph from a graph object, a file or a generator spec.

    Parameters
    ----------
    spec : networkx.Graph, str or os.PathLike
        A graph (copied as is), a path to an existing file whose extension
        is one of :data:`READERS` (optionally compressed, :data:`COMPRESSED`), or a
        generator spec such as ``"ring:16"``, ``"torus:4x4"`` or
        ``"erdos_renyi:32:0.2:7"``.  Nodes of files and
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
    looks_like_file = (_extension(path) in READERS or os.sep in path or "/" in path)
    if head not in GENERATORS and looks_like_file:
        raise TopologyError(f"cannot read topology file {path}: no such file")
    return _tidy_labels(_from_spec(path, seed))
