"""Time-varying topologies: a different mixing matrix each round.

A schedule is a cycle of ``period`` phases; round t (counted from 1) plays phase
(t − 1) mod period, whose doubly stochastic mixing matrix W_k (a
:class:`~.mixing.Mixing`, held by rows) says whom each node hears, with which weight,
and so whom it sends to (the nodes whose rows name it).  The nodes connect over the
*base graph*, the union of the phases' links; a round uses the links of its phase.

A *one-peer* phase has each node hear one node s_k(i) and send to one, t_k(i)
(s_k a permutation, t_k its inverse)::

    W_k = (I + P_k) / 2,   that is   x_i ← (x_i + x_{s_k(i)}) / 2

``one_peer_exponential:N`` is the one-peer exponential graph of Ying, Yuan, Chen,
Hu, Pan and Yin, "Exponential Graph is Provably Efficient for Decentralized Deep
Training" (NeurIPS 2021): τ = ⌈log₂ N⌉ phases, and in phase k node i sends to
(i + 2^k) mod N and hears (i − 2^k) mod N.  Its base graph is ``exponential:N``.
Every W_k is circulant, so the product over one period is too, with eigenvalues
the phases' multiplied::

    λ_m(W_{τ−1} ⋯ W_0) = Π_k (1 + e^{−2πi·m·2^k/N}) / 2,
    |λ_m| = Π_k |cos(π·m·2^k/N)|

For N a power of two, each m ≠ 0 (mod N) meets a k with m·2^k ≡ N/2 (mod N), whose
factor is cos(π/2) = 0: the product is J/N, and τ rounds of mixing alone end at the
exact average (the paper's periodic exact averaging; ``tests/test_schedules.py``
checks it on the matrices and on D-PSGD's mix).

Specs name schedules (:mod:`.schedule_specs`, which also reads schedules of one's own
from files): ``one_peer:FILE.json`` gives one-peer phases, ``dynamic:FILE.json`` a graph
a phase, mixed with its own Metropolis–Hastings weights (ALGORITHMS.md, "Peer-to-peer
gossip"), as decentralised learning on a graph that changes every round (a new random
regular graph a round, say).  Their period gap is found from the dense product, up to
:data:`DENSE_MAX_NODES` nodes.

This module knows nothing of sockets: it turns phases into index arrays.
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

from .generators import MAX_NODES
from .mixing import Mixing, _by_rows, unit_weights

__all__ = ["Schedule", "listeners", "one_peer", "one_peer_exponential", "dynamic",
           "DENSE_MAX_NODES"]

#: The most nodes whose period gap is found from the dense product of a schedule file's
#: phases (n × n floats per phase, then a 2-norm): above, it is not computed.
DENSE_MAX_NODES = 1024
#: ... and the most work for that product: Σ over phases of (n + entries) × n, twice the
#: multiply-adds of a one-peer phase's n × n (1,024 nodes × 512 one-peer phases).
DENSE_MAX_WORK = 1 << 30


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The phases of a time-varying topology.

    Attributes
    ----------
    name : str
        The spec it was made from (``one_peer_exponential:16``).
    phases : tuple of Mixing
        W_0 ... W_{τ−1}, by rows.
    contraction : float or None
        ρ = ‖W_{m−1} ⋯ W_0 − J/n‖₂ over the first m = :attr:`measured` phases: what
        they leave of the models' distance to their average (0: none, exact
        averaging); None where it was not computed.
    measured : int
        m: the whole period, or fewer phases where their product is already within
        float resolution of J/n (‖·‖_F < 1e-9), beyond which ρ says nothing.
    """

    name: str
    phases: tuple
    contraction: float | None
    measured: int = 0

    @property
    def period(self) -> int:
        return len(self.phases)

    @property
    def n(self) -> int:
        return self.phases[0].n

    @property
    def period_gap(self) -> float | None:
        """1 − ρ.  Exact averaging is ρ == 0 (a ρ of 1e-17 makes this 1.0 too)."""
        return None if self.contraction is None else 1.0 - self.contraction

    @property
    def round_gap(self) -> float | None:
        """The per-round equivalent of :attr:`period_gap`: 1 − ρ^(1/m) over the m
        phases measured (the geometric mean of their rounds').  It is 1 where a period
        averages exactly, as for a complete graph, though one round's W_k alone
        contracts far less; it speaks of whole periods of mixing, not of one round."""
        if self.contraction is None:
            return None  # ρ is in [0, 1] (a norm, clamped at 1 by _dense_contraction)
        return 1.0 - self.contraction ** (1.0 / (self.measured or self.period))

    def phase(self, rnd: int) -> int:
        """The phase round ``rnd`` (from 1) plays."""
        return (rnd - 1) % self.period

    def node_phases(self) -> list:
        """For each node, its phases as ``(heard, w_ii, sent to)``: the ``(j, w_ij)``
        pairs it mixes, its own weight, and the nodes that hear it (plain numbers)."""
        sent = [listeners(ph) for ph in self.phases]
        return [tuple((tuple(zip(*(a.tolist() for a in ph.row(i)))), float(ph.diag[i]),
                       tuple(to[i])) for ph, to in zip(self.phases, sent))
                for i in range(self.n)]

    def base_graph(self) -> nx.Graph:
        """The union of the phases' links, undirected, on nodes ``0..n-1``."""
        G = nx.Graph()
        G.add_nodes_from(range(self.n))
        for ph in self.phases:
            rows, cols = ph.entries()
            G.add_edges_from(zip(rows.tolist(), cols.tolist()))
        return G

    def matrix(self, k: int) -> np.ndarray:
        """Phase ``k``'s dense mixing matrix (for tests and small n)."""
        return self.phases[k].toarray()


def listeners(W: Mixing) -> list:
    """For each node, the nodes that hear it (whose rows of W name it), ascending."""
    rows, cols = W.entries()
    order = np.lexsort((rows, cols))
    bounds = np.searchsorted(cols[order], np.arange(W.n + 1))
    heard_by = rows[order]
    return [heard_by[bounds[j]:bounds[j + 1]].tolist() for j in range(W.n)]


def _one_peer_phase(sources: np.ndarray) -> Mixing:
    """W = (I + P) / 2 of a permutation's sources; a node that hears itself idles."""
    n = len(sources)
    moves = sources != np.arange(n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(moves, out=indptr[1:])
    return Mixing.from_rows(np.where(moves, 0.5, 1.0), indptr,
                            sources[moves].astype(np.int64), np.full(int(moves.sum()), 0.5))


def one_peer_exponential(n: int) -> Schedule:
    """Ying et al.'s one-peer exponential graph on ``n >= 2`` nodes (module docstring)."""
    if n < 2:
        raise TopologyError(f"one_peer_exponential needs at least 2 nodes, got {n}")
    if n > MAX_NODES:
        raise TopologyError(f"one_peer_exponential:{n} has {n} nodes; at most {MAX_NODES} "
                            "are supported")
    hops = 1 << np.arange((n - 1).bit_length())  # 2^k < n
    sources = (np.arange(n)[None, :] - hops[:, None]) % n
    # |λ_m| of the period's product, m = 1..n-1 (module docstring); a circulant matrix is
    # normal, so the largest is ‖Π − J/n‖₂.  Vectorised: (n - 1) × τ cosines.
    m = np.arange(1, n, dtype=np.float64)[:, None]
    factors = np.abs(np.cos(np.pi * ((m * hops[None, :]) % (2 * n)) / n))
    factors[factors < 1e-12] = 0.0  # cos(π/2) is 6e-17 in floats; others are >= π/(2n)
    rho = float(factors.prod(axis=1).max())
    return Schedule(f"one_peer_exponential:{n}",
                    tuple(_one_peer_phase(row) for row in sources), rho, len(hops))


def one_peer(name: str, sources: np.ndarray) -> Schedule:
    """A schedule from its phases' sources, ``(period, n)`` ints, each row a permutation
    of ``0..n-1`` (checked by :func:`~.schedule_specs.read_schedule`)."""
    phases = tuple(_one_peer_phase(row) for row in sources)
    return Schedule(name, phases, *_dense_contraction(phases))


def _graph_phase(n: int, edges: np.ndarray, weights: np.ndarray | None = None) -> Mixing:
    """A phase graph's rows: ``weights`` on its edges (each taken both ways: a symmetric
    matrix), by default Metropolis–Hastings', w_ij = 1 / (1 + max(d_i, d_j)); and
    w_ii = 1 − Σ_j w_ij (1 for a node without an edge this phase; the reader checks
    that given weights leave it non-negative).  The diagonal is a sparse sum, not
    :meth:`Mixing.from_edges`' O(n²) one (kept there so that a static graph's weights
    stay bit for bit those of earlier versions)."""
    us, vs = edges[:, 0], edges[:, 1]
    w = unit_weights(n, us, vs) if weights is None else weights
    indptr, cols, vals = _by_rows(n, us, vs, w)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    diag = np.maximum(1.0 - np.bincount(rows, weights=vals, minlength=n), 0.0)
    return Mixing.from_rows(diag, indptr, cols, vals)


def dynamic(name: str, n: int, phases: list) -> Schedule:
    """A graph a phase, each ``(edges, weights)``: a ``(m, 2)`` int array of edges
    ``u < v`` on ``0..n-1`` and their ``(m,)`` weights, or None for Metropolis'
    (checked by :func:`~.schedule_specs.read_schedule`)."""
    built = tuple(_graph_phase(n, edges, w) for edges, w in phases)
    return Schedule(name, built, *_dense_contraction(built))


def _dense_contraction(phases: tuple) -> tuple:
    """``(ρ, m)``: ‖W_{m−1} ⋯ W_0 − J/n‖₂ from the dense product, over the whole period
    or the first m phases whose product is within float resolution of J/n
    (‖·‖_F < 1e-9: 93 of 100 phases of random matchings of torus:4x4, 70 of 256 random
    permutations of 1,024 nodes; a ρ of the whole period would be rounding noise, or
    0).  ``(None, 0)`` above :data:`DENSE_MAX_NODES` nodes or :data:`DENSE_MAX_WORK`.
    One-peer products have entries that are multiples of 2^−τ, which float64 holds
    exactly for τ ≤ 52: there exact averaging is Π = J/n bit for bit, and ρ is 0."""
    n = phases[0].n
    work = sum(n + len(ph.indices) for ph in phases) * n
    if n > DENSE_MAX_NODES or work > DENSE_MAX_WORK:
        return None, 0
    P = np.eye(n)
    for m, ph in enumerate(phases, 1):
        P = ph.matmat(P)
        if m <= 52 and (P == 1.0 / n).all():
            return 0.0, m
        if np.linalg.norm(P - 1.0 / n) < 1e-9:
            break
    # at most 1 for a product of doubly stochastic matrices; above it is rounding
    return min(1.0, float(np.linalg.norm(P - 1.0 / n, 2))), m
