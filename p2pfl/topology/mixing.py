"""Gossip mixing matrices and their spectral gap."""

from __future__ import annotations

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

from .generators import _need

__all__ = ["SCHEMES", "mixing_weights", "spectral_gap"]


#: Mixing schemes accepted by :func:`mixing_weights` (plus ``attr:NAME``).
SCHEMES = ("metropolis", "uniform", "weight", "attr:NAME")


def _node_count(G) -> int:
    """The nodes of a graph labelled 0..n-1 (as :func:`relabel` makes them)."""
    n = G.number_of_nodes()
    _need(set(G) == set(range(n)),
          "mixing weights need nodes labelled 0..n-1; call relabel() first")
    return n


def _adjacency(G, attr=None):
    """Symmetric affinity matrix of an int-labelled graph, self-loops ignored."""
    n = _node_count(G)
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


def _edge_ends(G):
    """The two ends of each edge of an int-labelled graph, once each (parallel edges
    and self-loops ignored, as :func:`_adjacency` does)."""
    n = _node_count(G)
    ends = np.array([(u, v) if u < v else (v, u) for u, v in G.edges() if u != v],
                    dtype=np.int64).reshape(-1, 2)
    ends = np.unique(ends, axis=0)
    return n, ends[:, 0], ends[:, 1]


def _on_edges(n, us, vs, w):
    """The symmetric ``(n, n)`` matrix with ``w`` on each edge and 0 elsewhere: the
    same entries as an adjacency matrix's elementwise quotient, without its dense
    temporaries (three of 2 GiB each at 16,384 nodes)."""
    W = np.zeros((n, n))
    W[us, vs] = w
    W[vs, us] = w
    return W


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
            1; ``attr:NAME`` other than weight needs an edge with it).  With
            ``a`` scaled so its largest value is 1 and ``s_i = sum_j a_ij``,
            ``w_ij = a_ij / (1 + max(s_i, s_j))``.
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
    if scheme in ("metropolis", "uniform"):  # unit affinities: degrees are exact counts
        n, us, vs = _edge_ends(G)
        d = (np.bincount(us, minlength=n) + np.bincount(vs, minlength=n)).astype(float)
        top = np.maximum(d[us], d[vs]) if scheme == "metropolis" else d.max(initial=0.0)
        W = _on_edges(n, us, vs, 1.0 / (1.0 + top))
    elif scheme == "weight" or (isinstance(scheme, str) and scheme.startswith("attr:")
                                and scheme[5:]):
        attr = "weight" if scheme == "weight" else scheme[5:]
        if attr != "weight":  # a named attribute that no edge has is a typo
            names = sorted({k for _, _, d in G.edges(data=True) for k in d})
            _need(G.number_of_edges() == 0 or attr in names,
                  f"no edge has the attribute {attr!r} (edge attributes: "
                  f"{', '.join(names) or 'none'})")
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
