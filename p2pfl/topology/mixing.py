"""Gossip mixing matrices, held by rows."""

from __future__ import annotations

import dataclasses
import functools

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

from .generators import _need

__all__ = ["SCHEMES", "Mixing", "mixing", "mixing_weights", "unit_weights"]


#: Mixing schemes accepted by :func:`mixing_weights` (plus ``attr:NAME``).
SCHEMES = ("metropolis", "uniform", "weight", "attr:NAME")


def _node_count(G) -> int:
    """The nodes of a graph labelled 0..n-1 (as :func:`relabel` makes them)."""
    n = G.number_of_nodes()
    _need(set(G) == set(range(n)),
          "mixing weights need nodes labelled 0..n-1; call relabel() first")
    return n


def _by_rows(n, us, vs, w):
    """Compressed sparse rows ``(indptr, cols, vals)`` of the symmetric matrix with
    ``w`` on each edge ``(us, vs)``, columns ascending within a row."""
    rows, cols = np.concatenate([us, vs]), np.concatenate([vs, us])
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols[order].astype(np.int64), np.concatenate([w, w]).astype(float)[order]


#: Entries of the dense block of rows that :func:`_dense_row_sums` sums at a time.
_BLOCK_ENTRIES = 1 << 22


def _dense_rows(indptr, cols, vals, r0, r1):
    """Rows ``r0:r1`` of the matrix as a dense ``(r1 - r0, n)`` block (diagonal 0)."""
    n, lo, hi = len(indptr) - 1, indptr[r0], indptr[r1]
    block = np.zeros((r1 - r0, n))
    block[np.repeat(np.arange(r1 - r0), np.diff(indptr[r0:r1 + 1])), cols[lo:hi]] = vals[lo:hi]
    return block


def _dense_row_sums(indptr, cols, vals):
    """Each row's sum as numpy sums the dense row, zeros included (pairwise), a block
    of rows at a time: the bits of ``W.sum(axis=1)`` on the n x n matrix (which
    earlier versions summed, so that weights and runs stay bit for bit the same)
    in 32 MiB, in O(n^2) time (0.18-0.25 s at 16,384 nodes: benchmarks/lanczos_gap.py)."""
    n = len(indptr) - 1
    sums = np.empty(n)
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        sums[r0:r1] = _dense_rows(indptr, cols, vals, r0, r1).sum(axis=1)
    return sums


@dataclasses.dataclass(frozen=True, eq=False)
class Mixing:
    """A doubly stochastic mixing matrix held by rows: each node's self-weight and the
    weights of the nodes it hears (compressed sparse rows).  A graph's is symmetric
    (:meth:`from_edges`); a time-varying topology's phase need not be (one peer a round:
    :mod:`.schedules`).  It takes O(n + edges) memory where the dense matrix takes
    n * n floats (2 GiB at 16,384 nodes).  Its arrays are read-only.

    Attributes
    ----------
    diag : numpy.ndarray
        ``(n,)`` self-weights ``w_ii``.
    indptr, indices, data : numpy.ndarray
        Row ``i``'s neighbours are ``indices[indptr[i]:indptr[i + 1]]`` (ascending),
        with weights ``data[indptr[i]:indptr[i + 1]]``; an edge of weight 0 (a zero
        affinity) is kept.
    """

    diag: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @classmethod
    def from_edges(cls, n, us, vs, w):
        """The matrix with ``w`` on each edge ``(us, vs)`` (each once, ``u != v``) and
        the diagonal filling each row to 1."""
        indptr, cols, vals = _by_rows(n, us, vs, w)
        return cls.from_rows(1.0 - _dense_row_sums(indptr, cols, vals), indptr, cols, vals)

    @classmethod
    def from_rows(cls, diag, indptr, indices, data):
        """The matrix of these arrays (see the class), made read-only."""
        arrays = (diag, indptr, indices, data)
        for a in arrays:
            a.flags.writeable = False
        return cls(*arrays)

    @property
    def n(self) -> int:
        return len(self.diag)

    @property
    def most_heard(self) -> int:
        """The most nodes any one node hears (entries in a row, off the diagonal)."""
        return int(np.diff(self.indptr).max(initial=0))

    def row(self, i):
        """Node ``i``'s neighbours (ascending) and their weights, as two arrays."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.indices[lo:hi], self.data[lo:hi]

    @functools.cached_property
    def _rows(self):
        """The row of each entry of ``indices`` and ``data``."""
        return np.repeat(np.arange(self.n), np.diff(self.indptr))

    def entries(self):
        """``(rows, cols)`` of the off-diagonal entries: node ``rows[e]`` hears
        ``cols[e]``."""
        return self._rows, self.indices

    def matvec(self, x):
        """``W @ x`` for a vector ``x`` of length n, in O(n + edges)."""
        return self.diag * x + np.bincount(self._rows, weights=self.data * x[self.indices],
                                           minlength=self.n)

    def matmat(self, P):
        """``W @ P`` for a dense ``(n, m)`` P: each row's entries summed in one reduceat."""
        out = self.diag[:, None] * P
        if len(self.indices):
            busy = np.flatnonzero(np.diff(self.indptr))  # rows with entries, in order
            out[busy] += np.add.reduceat(self.data[:, None] * P[self.indices],
                                         self.indptr[busy], axis=0)
        return out

    def toarray(self):
        """The dense ``(n, n)`` float64 matrix (a new, writeable array)."""
        W = _dense_rows(self.indptr, self.indices, self.data, 0, self.n)
        W[np.arange(self.n), np.arange(self.n)] = self.diag
        return W


def _edge_ends(G):
    """The two ends of each edge of an int-labelled graph, once each (parallel edges
    and self-loops ignored)."""
    n = _node_count(G)
    ends = np.array([(u, v) if u < v else (v, u) for u, v in G.edges() if u != v],
                    dtype=np.int64).reshape(-1, 2)
    ends = np.unique(ends, axis=0)
    return n, ends[:, 0], ends[:, 1]


def _edge_name(u, v, labels) -> str:
    """``(u, v)``, or with ``labels`` the labels the graph came with: ``('lab-a', 'gym')``."""
    if labels is None:
        return f"({u}, {v})"
    u, v = (repr(labels[x]) if isinstance(labels[x], str) else str(labels[x]) for x in (u, v))
    return f"({u}, {v})"


def _affinities(G, us, vs, attr, labels=None):
    """Each edge's affinity, its attribute ``attr`` (missing: 1), checked in the graph's
    edge order; of parallel edges (a multigraph's, or a directed graph's two ways) the
    last one's, as a dense matrix filled in that order had it."""
    found = {}
    for u, v, data in G.edges(data=True):
        if u == v:
            continue
        x = data.get(attr, 1.0)
        try:
            x = float(x)
        except (TypeError, ValueError):
            raise TopologyError(f"edge {_edge_name(u, v, labels)} has non-numeric {attr} "
                                f"{x!r}") from None
        if not (np.isfinite(x) and x >= 0):  # the edge named only then: a loop over edges
            raise TopologyError(f"edge {_edge_name(u, v, labels)} has {attr} {x}; weights "
                                "must be finite and non-negative")
        found[(u, v) if u < v else (v, u)] = x
    return np.array([found[e] for e in zip(us.tolist(), vs.tolist())], dtype=float)


def _weighted(G, attr, labels=None):
    """``(n, us, vs, w)``: weighted Metropolis-Hastings edge weights on the affinity
    ``attr``."""
    if attr != "weight":  # a named attribute that no edge has is a typo
        names = sorted({k for _, _, d in G.edges(data=True) for k in d})
        _need(G.number_of_edges() == 0 or attr in names,
              f"no edge has the attribute {attr!r} (edge attributes: "
              f"{', '.join(names) or 'none'})")
    n, us, vs = _edge_ends(G)
    a = _affinities(G, us, vs, attr, labels)
    _need(a.max(initial=0.0) > 0, f"all edges have {attr} 0; no gossip is possible")
    positive = nx.Graph()
    positive.add_nodes_from(range(n))
    positive.add_edges_from(zip(us[a > 0].tolist(), vs[a > 0].tolist()))
    n_parts = nx.number_connected_components(positive)
    _need(n_parts == 1, f"edges with positive {attr} leave the graph in {n_parts} components")
    a = a / a.max()
    s = _dense_row_sums(*_by_rows(n, us, vs, a))
    return n, us, vs, a / (1.0 + np.maximum(s[us], s[vs]))


def unit_weights(n, us, vs, scheme="metropolis"):
    """The weight of each edge ``(us, vs)`` of a graph on ``n`` nodes with unit
    affinities: ``metropolis``, w_ij = 1 / (1 + max(d_i, d_j)), or ``uniform``,
    1 / (1 + max degree)."""
    d = (np.bincount(us, minlength=n) + np.bincount(vs, minlength=n)).astype(float)
    top = np.maximum(d[us], d[vs]) if scheme == "metropolis" else d.max(initial=0.0)
    return np.ones(len(us)) / (1.0 + top)


def mixing(G, scheme="metropolis", *, labels=None):
    """Symmetric, non-negative, doubly stochastic gossip matrix of ``G``, sparse.

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
            1; ``attr:NAME`` other than weight needs an edge with it).  With
            ``a`` scaled so its largest value is 1 and ``s_i = sum_j a_ij``,
            ``w_ij = a_ij / (1 + max(s_i, s_j))``.
            Unit affinities give exactly the ``"metropolis"`` matrix; the
            result does not change when all affinities are scaled, and
            ``w_ii >= 1 / (1 + s_i) > 0``.  Zero-affinity edges carry no
            weight, so positive ones must still connect the graph.

    labels : list, optional
        ``labels[i]`` is node ``i``'s original label (:func:`relabel`): errors name
        edges by them.

    Returns
    -------
    Mixing
        ``W == W.T``, ``W >= 0``, rows (hence columns) summing to 1.

    Raises
    ------
    TopologyError
        Unknown scheme, negative or non-numeric affinities, or affinities
        whose positive edges do not connect the graph.
    """
    if scheme in ("metropolis", "uniform"):  # unit affinities: degrees are exact counts
        n, us, vs = _edge_ends(G)
        w = unit_weights(n, us, vs, scheme)
    elif scheme == "weight" or (isinstance(scheme, str) and scheme.startswith("attr:")
                                and scheme[5:]):
        n, us, vs, w = _weighted(G, "weight" if scheme == "weight" else scheme[5:], labels)
    else:
        raise TopologyError(f"unknown mixing scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    return Mixing.from_edges(n, us, vs, w)


def mixing_weights(G, scheme="metropolis"):
    """The dense ``(n, n)`` float64 form of :func:`mixing`'s matrix (the same
    parameters and errors); n * n floats, so for large graphs use :func:`mixing`."""
    return mixing(G, scheme).toarray()
