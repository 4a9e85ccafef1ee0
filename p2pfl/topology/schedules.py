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

This module knows nothing of sockets: it turns a spec into index arrays.
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

from .generators import MAX_NODES

__all__ = ["Schedule", "SCHEDULES", "one_peer_exponential", "parse_schedule", "is_schedule"]


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
    period_gap : float
        1 − ‖W_{τ−1} ⋯ W_0 − J/n‖₂: how far one whole period brings the models
        toward their average (1: exactly there).
    """

    name: str
    sources: np.ndarray
    targets: np.ndarray
    period_gap: float

    @property
    def period(self) -> int:
        return int(self.sources.shape[0])

    @property
    def n(self) -> int:
        return int(self.sources.shape[1])

    @property
    def round_gap(self) -> float:
        """The per-round equivalent of :attr:`period_gap`: 1 − ρ^(1/τ), where ρ is one
        period's contraction; comparable with a static graph's spectral gap."""
        rho = min(1.0, max(0.0, 1.0 - self.period_gap))
        return 1.0 - rho ** (1.0 / self.period)

    def phase(self, rnd: int) -> int:
        """The phase round ``rnd`` (from 1) plays."""
        return (rnd - 1) % self.period

    def node_phases(self, i: int) -> tuple:
        """Node ``i``'s ``(heard, sent to)`` pair for each phase, as plain ints."""
        return tuple(zip(self.sources[:, i].tolist(), self.targets[:, i].tolist()))

    def base_graph(self) -> nx.Graph:
        """The union of the phases' links, undirected, on nodes ``0..n-1``."""
        G = nx.Graph()
        G.add_nodes_from(range(self.n))
        nodes = np.broadcast_to(np.arange(self.n), self.sources.shape)
        G.add_edges_from(zip(nodes.ravel().tolist(), self.sources.ravel().tolist()))
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
    rho = np.abs(np.cos(np.pi * ((m * hops[None, :]) % (2 * n)) / n)).prod(axis=1).max()
    rho = 0.0 if rho < 1e-12 else float(rho)  # cos(π/2) is 6e-17 in floats, not 0
    return Schedule(f"one_peer_exponential:{n}", sources, targets, 1.0 - rho)


#: Schedule name -> function of its node count.  Specs are ``NAME:N``.
SCHEDULES = {"one_peer_exponential": one_peer_exponential}


def _name(spec) -> str:
    return spec.split(":", 1)[0].strip().lower().replace("-", "_")


def is_schedule(spec) -> bool:
    """Whether ``spec`` is a string naming a schedule (``one_peer_exponential:N``)."""
    return isinstance(spec, str) and _name(spec) in SCHEDULES


def parse_schedule(spec: str) -> Schedule:
    """The schedule of a ``NAME:N`` spec; a bad one is a :class:`TopologyError`."""
    name, _, rest = spec.strip().partition(":")
    name = _name(name)
    if not rest or ":" in rest:
        raise TopologyError(f"{name} spec takes {name}:N, got {spec!r}")
    try:
        n = int(rest.strip())
    except ValueError:
        raise TopologyError(f"{name}: N must be an integer, got {rest.strip()!r}") from None
    return SCHEDULES[name](n)
