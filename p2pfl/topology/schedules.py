"""Time-varying topologies: one peer a round, a different one each round.

A schedule is a cycle of ``period`` phases; round t (counted from 1) plays phase
(t − 1) mod period.  In phase k node i hears one node, s_k(i), and sends to one,
t_k(i) (s_k is a permutation and t_k its inverse), and mixes::

    W_k = (I + P_k) / 2,   that is   x_i ← (x_i + x_{s_k(i)}) / 2

Each W_k is doubly stochastic (P_k is a permutation matrix), so every round keeps
the network's average.  The nodes connect over the *base graph*, the union of the
phases' links: a round uses one of its links into each node and one out.

``one_peer_exponential:N`` is the one-peer exponential graph of Ying, Yuan, Chen,
Hu, Pan and Yin, "Exponential Graph is Provably Efficient for Decentralized Deep
Training" (NeurIPS 2021): τ = ⌈log₂ N⌉ phases, and in phase k node i sends to
(i + 2^k) mod N and hears (i − 2^k) mod N.  Its base graph is ``exponential:N``.
Every W_k is circulant, so the product over one period is too, with eigenvalues
the phases' multiplied::

    λ_m(W_{τ−1} ⋯ W_0) = Π_k (1 + e^{−2πi·m·2^k/N}) / 2,   |λ_m| = Π_k |cos(π·m·2^k/N)|

For N a power of two, each m ≠ 0 (mod N) meets a k with m·2^k ≡ N/2 (mod N), whose
factor is cos(π/2) = 0: the product is J/N, and τ rounds of mixing alone end at the
exact average (the paper's periodic exact averaging; ``tests/test_schedules.py``
checks it on the matrices and on D-PSGD's mix).

``one_peer:FILE.json`` is a schedule of one's own: ``{"sources": [[...], ...]}``, a
list of phases, each the node that each node hears (a permutation of 0..n−1; a node
that hears itself idles that phase, W_k's row i is e_i).  ``topologies/`` has the
one-peer hypercube on 16 nodes (i hears and sends to i XOR 2^k), which averages
exactly in 4 rounds too.  Its period gap is found from the dense product, up to
:data:`DENSE_MAX_NODES` nodes.

This module knows nothing of sockets: it turns a spec into index arrays.
"""

from __future__ import annotations

import dataclasses
import json

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

from .generators import MAX_EDGES, MAX_NODES

__all__ = ["Schedule", "SCHEDULES", "one_peer", "one_peer_exponential", "read_schedule",
           "parse_schedule", "is_schedule", "DENSE_MAX_NODES"]

#: The most nodes whose period gap is found from the dense product of a schedule file's
#: phases (n × n floats per phase, then a 2-norm): above, it is not computed.
DENSE_MAX_NODES = 1024
#: ... and the most multiply-adds of that product (phases × n × n; about 1 s here).
DENSE_MAX_WORK = 1 << 29


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The phases of a one-peer time-varying topology.

    Attributes
    ----------
    name : str
        The spec it was made from (``one_peer_exponential:16``).
    sources : numpy.ndarray
        ``(period, n)`` ints: ``sources[k, i]`` is the node ``i`` hears in phase ``k``.
    targets : numpy.ndarray
        ``(period, n)`` ints: ``targets[k, i]`` is the node ``i`` sends to in phase ``k``.
    contraction : float or None
        ρ = ‖W_{τ−1} ⋯ W_0 − J/n‖₂: what one whole period leaves of the models'
        distance to their average (0: none, exact averaging); None where it was not
        computed.
    """

    name: str
    sources: np.ndarray
    targets: np.ndarray
    contraction: float | None

    @property
    def period(self) -> int:
        return int(self.sources.shape[0])

    @property
    def n(self) -> int:
        return int(self.sources.shape[1])

    @property
    def period_gap(self) -> float | None:
        """1 − ρ: exactly 1 where a period averages exactly, and only there."""
        return None if self.contraction is None else 1.0 - self.contraction

    @property
    def round_gap(self) -> float | None:
        """The per-round equivalent of :attr:`period_gap`: 1 − ρ^(1/τ), where ρ is one
        period's contraction (the geometric mean of the rounds').  It is 1 where a
        period averages exactly, as for a complete graph, though one round's W_k alone
        contracts far less; it speaks of whole periods of mixing, not of one round."""
        if self.contraction is None:
            return None
        rho = min(1.0, max(0.0, self.contraction))
        return 1.0 - rho ** (1.0 / self.period)

    def phase(self, rnd: int) -> int:
        """The phase round ``rnd`` (from 1) plays."""
        return (rnd - 1) % self.period

    def node_phases(self, i: int) -> tuple:
        """Node ``i``'s ``(heard, sent to)`` pair for each phase, as plain ints (``i``
        itself in a phase it idles)."""
        return tuple(zip(self.sources[:, i].tolist(), self.targets[:, i].tolist()))

    def base_graph(self) -> nx.Graph:
        """The union of the phases' links, undirected, on nodes ``0..n-1``."""
        G = nx.Graph()
        G.add_nodes_from(range(self.n))
        nodes = np.broadcast_to(np.arange(self.n), self.sources.shape).ravel()
        heard = self.sources.ravel()
        moves = nodes != heard  # an idle phase is no link
        G.add_edges_from(zip(nodes[moves].tolist(), heard[moves].tolist()))
        return G

    def matrix(self, k: int) -> np.ndarray:
        """Phase ``k``'s dense mixing matrix W_k = (I + P_k) / 2 (for tests and small n)."""
        W = np.eye(self.n) / 2
        W[np.arange(self.n), self.sources[k]] += 0.5
        return W


def one_peer_exponential(n: int) -> Schedule:
    """Ying et al.'s one-peer exponential graph on ``n >= 2`` nodes (module docstring)."""
    if n < 2:
        raise TopologyError(f"one_peer_exponential needs at least 2 nodes, got {n}")
    if n > MAX_NODES:
        raise TopologyError(f"one_peer_exponential:{n} has {n} nodes; at most {MAX_NODES} "
                            "are supported")
    hops = 1 << np.arange((n - 1).bit_length())  # 2^k < n
    i = np.arange(n)
    sources = (i[None, :] - hops[:, None]) % n
    targets = (i[None, :] + hops[:, None]) % n
    # |λ_m| of the period's product, m = 1..n-1 (module docstring); a circulant matrix is
    # normal, so the largest is ‖Π − J/n‖₂.  Vectorised: (n - 1) × τ cosines.
    m = np.arange(1, n, dtype=np.float64)[:, None]
    factors = np.abs(np.cos(np.pi * ((m * hops[None, :]) % (2 * n)) / n))
    factors[factors < 1e-12] = 0.0  # cos(π/2) is 6e-17 in floats; others are >= π/(2n)
    rho = float(factors.prod(axis=1).max())
    return Schedule(f"one_peer_exponential:{n}", sources, targets, rho)


def one_peer(name: str, sources: np.ndarray) -> Schedule:
    """A schedule from its phases' sources, ``(period, n)`` ints, each row a permutation
    of ``0..n-1`` (checked by :func:`read_schedule`)."""
    period, n = sources.shape
    targets = np.empty_like(sources)
    targets[np.arange(period)[:, None], sources] = np.arange(n)[None, :]
    return Schedule(name, sources, targets, _dense_contraction(sources))


def _dense_contraction(sources: np.ndarray) -> float | None:
    """‖W_{τ−1} ⋯ W_0 − J/n‖₂ from the dense product (row i of W_k P is
    (P_i + P_{s_k(i)}) / 2); None above :data:`DENSE_MAX_NODES` nodes or
    :data:`DENSE_MAX_WORK`.  The product's entries are multiples of 2^−τ, which float64
    holds exactly for τ ≤ 52: there exact averaging is Π = J/n bit for bit, and ρ is 0.
    A tiny ρ otherwise is a strong contraction (random matchings over 100 rounds leave
    some 1e-15), not exact averaging."""
    period, n = sources.shape
    if n > DENSE_MAX_NODES or period * n * n > DENSE_MAX_WORK:
        return None
    P = np.eye(n)
    for src in sources:
        P = (P + P[src]) / 2
    if period <= 52 and (P == 1.0 / n).all():
        return 0.0
    return float(np.linalg.norm(P - 1.0 / n, 2))


def read_schedule(path: str) -> Schedule:
    """A schedule file, ``{"sources": [[...], ...]}`` (module docstring); anything else
    in it is a :class:`TopologyError` naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise TopologyError(f"cannot read schedule {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise TopologyError(f"schedule {path} is not JSON: {exc}") from None
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
    sources = np.array(rows)
    if sources.dtype.kind not in "iu":
        raise TopologyError(f"schedule {path}: node ids must be integers 0..{n - 1}")
    bad = ~(np.sort(sources, axis=1) == np.arange(n)).all(axis=1)
    if bad.any():
        raise TopologyError(f"schedule {path}: phase {int(np.argmax(bad))} is not a "
                            f"permutation of 0..{n - 1} (each node heard by exactly one)")
    return one_peer(f"one_peer:{path}", sources.astype(np.int64))


def _exponential_spec(rest: str) -> Schedule:
    try:
        n = int(rest.strip())
    except ValueError:
        raise TopologyError(f"one_peer_exponential: N must be an integer, got "
                            f"{rest.strip()!r}") from None
    return one_peer_exponential(n)


#: Schedule name -> (its argument's placeholder, the function of that argument's text).
SCHEDULES = {"one_peer_exponential": ("N", _exponential_spec),
             "one_peer": ("FILE.json", read_schedule)}


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
