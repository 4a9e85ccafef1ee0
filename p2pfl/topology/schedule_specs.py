"""Schedule specs: ``one_peer_exponential:N``, and files of one's own, as JSON.

``one_peer:FILE.json`` — ``{"sources": [[...], ...]}``: a list of phases, each the node
that each node hears (a permutation of 0..n−1; a node that hears itself idles that
phase).  ``dynamic:FILE.json`` — ``{"nodes": N, "phases": [[[u, v], ...], ...]}``: a list
of phases, each the undirected edges of that phase's graph on 0..N−1 (a node without an
edge idles), mixed with the phase's Metropolis–Hastings weights; or, a phase's edges all
``[u, v, w]``, with the mixing weight w_uv = w_vu = w of one's own (0 < w ≤ 1, each node's
summing to at most 1; its self-weight takes the rest).  Either way the union
of the phases' links must be connected (checked by the topology's validation).  Other
keys (a ``description``) are ignored.  Anything else wrong is one
:class:`~p2pfl.errors.TopologyError` naming the file.
"""

from __future__ import annotations

import json

import numpy as np

from p2pfl.errors import TopologyError

from .generators import MAX_EDGES, MAX_NODES, SCHEDULE_SPECS
from .schedules import Schedule, dynamic, one_peer, one_peer_exponential

__all__ = ["SCHEDULES", "read_schedule", "is_schedule", "parse_schedule"]


def _load(path: str):
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a BOM is no JSON error
            return json.load(fh)
    except OSError as exc:
        raise TopologyError(f"cannot read schedule {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise TopologyError(f"schedule {path} is not JSON: {exc}") from None
    except RecursionError:
        raise TopologyError(f"schedule {path} nests its lists too deep") from None


def _ints(path: str, rows: list, width: int, n: int, what: str) -> np.ndarray:
    """``rows``, lists of ``width`` plain ints each (a bool is not one), as a
    ``(len(rows), width)`` int64 array, every value in 0..n-1."""
    if not all(isinstance(r, list) and len(r) == width and all(type(x) is int for x in r)
               for r in rows):
        raise TopologyError(f"schedule {path}: {what} must be lists of {width} integers")
    if any(x < 0 or x >= n for r in rows for x in r):
        raise TopologyError(f"schedule {path}: {what} must name nodes 0..{n - 1}")
    return np.array(rows, dtype=np.int64).reshape(len(rows), width)


def _one_peer(path: str, data) -> Schedule:
    rows = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise TopologyError(f"schedule {path}: expected {{\"sources\": [[...], ...]}}, the "
                            "node each node hears, one list a phase")
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise TopologyError(f"schedule {path}: every phase must list {n} nodes, as the first")
    if not 2 <= n <= MAX_NODES or len(rows) * n > MAX_EDGES:
        raise TopologyError(f"schedule {path}: {len(rows)} phases of {n} nodes; 2 to "
                            f"{MAX_NODES} nodes and {MAX_EDGES:,} entries are supported")
    sources = _ints(path, rows, n, n, "phases")
    bad = ~(np.sort(sources, axis=1) == np.arange(n)).all(axis=1)
    if bad.any():
        raise TopologyError(f"schedule {path}: phase {int(np.argmax(bad))} is not a "
                            f"permutation of 0..{n - 1} (each node heard by exactly one)")
    return one_peer(f"one_peer:{path}", sources)


def _dynamic(path: str, data) -> Schedule:
    n = data.get("nodes") if isinstance(data, dict) else None
    phases = data.get("phases") if isinstance(data, dict) else None
    if type(n) is not int or not isinstance(phases, list) or not phases \
            or not all(isinstance(p, list) for p in phases):
        raise TopologyError(f"schedule {path}: expected {{\"nodes\": N, \"phases\": "
                            "[[[u, v], ...], ...]}, each phase its graph's edges")
    if not 2 <= n <= MAX_NODES or sum(map(len, phases)) + len(phases) * n > MAX_EDGES:
        raise TopologyError(f"schedule {path}: 2 to {MAX_NODES} nodes, and {MAX_EDGES:,} "
                            "edges plus phases × nodes, are supported")
    built = []
    for k, edges in enumerate(phases):
        three = [isinstance(e, list) and len(e) == 3 for e in edges]
        weighted = bool(edges) and all(three)
        if any(three) and not weighted:
            raise TopologyError(f"schedule {path}: phase {k}'s edges must all be [u, v, w] "
                                "(a weight each) or all [u, v]")
        pairs = [e[:2] for e in edges] if weighted else edges
        arr = np.sort(_ints(path, pairs, 2, n, f"phase {k}'s edges"), axis=1)
        if (arr[:, 0] == arr[:, 1]).any():
            raise TopologyError(f"schedule {path}: phase {k} links a node to itself")
        if len(np.unique(arr, axis=0)) < len(arr):
            raise TopologyError(f"schedule {path}: phase {k} lists an edge twice")
        built.append((arr, _weights(path, k, n, arr, [e[2] for e in edges]) if weighted
                      else None))
    return dynamic(f"dynamic:{path}", n, built)


def _weights(path: str, k: int, n: int, edges: np.ndarray, given: list) -> np.ndarray:
    """Phase ``k``'s mixing weights of one's own, one an edge: each in (0, 1], and each
    node's summing to at most 1 (its self-weight is the rest)."""
    if not all(type(w) in (int, float) for w in given):
        raise TopologyError(f"schedule {path}: phase {k}'s weights must be numbers")
    # an integer of 400 digits is a JSON number too, beyond float64
    w = np.array([min(max(x, -1), 2) if type(x) is int else x for x in given], np.float64)
    if not (np.isfinite(w) & (w > 0) & (w <= 1)).all():
        raise TopologyError(f"schedule {path}: phase {k}'s weights must be in (0, 1]")
    # within 1e-12: a node checks that its row sums to 1 within 1e-9, in its own order
    sums = np.bincount(edges[:, 0], w, n) + np.bincount(edges[:, 1], w, n)
    if (sums > 1 + 1e-12).any():
        i = int(np.argmax(sums))
        raise TopologyError(f"schedule {path}: phase {k}'s weights of node {i} sum to "
                            f"{sums[i]:.6g}; a node's may sum to at most 1")
    return w


def read_schedule(path: str, kind: str = "one_peer") -> Schedule:
    """The schedule in ``path``: ``kind`` ``one_peer`` or ``dynamic`` (module docstring)."""
    data = _load(path)
    return _one_peer(path, data) if kind == "one_peer" else _dynamic(path, data)


def _exponential_spec(rest: str) -> Schedule:
    try:
        n = int(rest.strip())
    except ValueError:
        raise TopologyError(f"one_peer_exponential: N must be an integer, got "
                            f"{rest.strip()!r}") from None
    return one_peer_exponential(n)


#: Schedule name -> (its argument's placeholder, the function of that argument's text);
#: the placeholders are generators.SCHEDULE_SPECS', which the unknown-topology message names.
SCHEDULES = {
    "one_peer_exponential": (SCHEDULE_SPECS["one_peer_exponential"], _exponential_spec),
    "one_peer": (SCHEDULE_SPECS["one_peer"], lambda path: read_schedule(path, "one_peer")),
    "dynamic": (SCHEDULE_SPECS["dynamic"], lambda path: read_schedule(path, "dynamic")),
}


def _name(spec) -> str:
    return spec.split(":", 1)[0].strip().lower().replace("-", "_")


def is_schedule(spec) -> bool:
    """Whether ``spec`` is a string naming a schedule (``one_peer_exponential:N``)."""
    return isinstance(spec, str) and _name(spec) in SCHEDULES


def parse_schedule(spec: str) -> Schedule:
    """The schedule of a ``NAME:ARG`` spec; a bad one is a :class:`TopologyError`."""
    head, _, rest = spec.strip().partition(":")
    name = _name(head)
    placeholder, make = SCHEDULES[name]
    if not rest.strip() or (placeholder == "N" and ":" in rest):
        raise TopologyError(f"{name} spec takes {name}:{placeholder}, got {spec!r}")
    return make(rest if placeholder == "N" else rest.strip())
