"""Communication graphs and gossip mixing weights.

A topology is an undirected, connected :class:`networkx.Graph`.  It can come
from a generator spec string (``"ring:16"``, ``"torus:4x4"``, ...), from a
graph file (GraphML, GML, edge list, adjacency list, node-link JSON) or from
a graph object.  :func:`build` turns any of these into a :class:`Topology`:
an integer-labelled graph, the original labels and a symmetric, doubly
stochastic mixing matrix, held by rows (O(n + edges) memory).

This module knows nothing of sockets or tensors: it takes and returns
networkx graphs and numpy arrays.  Every user-facing problem raises
:class:`p2pfl.errors.TopologyError` with a one-line message.

The package is split into :mod:`.generators` (generator functions and spec
parsing), :mod:`.files` (file readers, :func:`load_topology`), :mod:`.graph`
(:func:`validate`, :func:`relabel`), :mod:`.mixing` (mixing weights) and
:mod:`.spectrum` (the spectral gap); everything public is re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools

import networkx as nx
import numpy as np

from p2pfl.errors import TopologyError

from . import schedules, spectrum
from .files import READERS, load_topology
from .generators import (GENERATORS, barabasi_albert, complete, erdos_renyi,
                         exponential, line, random_regular, ring, small_world,
                         star, torus)
from .graph import MAX_NODES, edges_as_run, relabel, validate
from .mixing import SCHEMES, Mixing, mixing, mixing_weights
from .schedule_specs import SCHEDULES, is_schedule, parse_schedule
from .schedules import Schedule
from .spectrum import spectral_gap

__all__ = [
    "GENERATORS", "SCHEMES", "SCHEDULES", "READERS", "Topology", "Mixing", "Schedule", "mixing",
    "ring", "line", "complete", "star", "torus", "exponential",
    "erdos_renyi", "small_world", "random_regular", "barabasi_albert",
    "load_topology", "validate", "relabel", "edges_as_run", "mixing_weights", "spectral_gap",
    "MAX_NODES",
    "build", "count", "describe", "is_schedule", "parse_schedule",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """A validated, integer-labelled graph with its mixing matrix.

    Instances compare by identity.  :attr:`weights` is read-only; copy it before
    modifying.

    Attributes
    ----------
    graph : networkx.Graph
        Nodes ``0..n-1``.
    labels : list
        ``labels[i]`` is the original label of node ``i``.
    mixing : Mixing
        The doubly stochastic mixing matrix, held by rows.
    warnings : list of str
        Repairs made while validating.
    schedule : Schedule or None
        A time-varying topology's phases (``one_peer_exponential:N``, ``one_peer:FILE``,
        ``dynamic:FILE``): each round mixes over its phase's links of :attr:`graph`, the
        union of the phases' links, with its phase's weights (:mod:`.schedules`).
        :attr:`mixing` is then the union's Metropolis matrix, which no round uses.
        None: every round mixes with :attr:`mixing`.
    """

    graph: nx.Graph
    labels: list
    mixing: Mixing
    warnings: list = dataclasses.field(default_factory=list)
    schedule: Schedule | None = None

    @property
    def n(self):
        """Number of nodes."""
        return self.graph.number_of_nodes()

    @functools.cached_property
    def weights(self):
        """The dense ``(n, n)`` mixing matrix, read-only: n * n floats (2 GiB at 16,384
        nodes), made on first use; :attr:`mixing` holds the same by rows."""
        W = self.mixing.toarray()
        W.flags.writeable = False
        return W

    @functools.cached_property
    def spectral_gap(self):
        """Spectral gap of the mixing matrix (see :func:`spectral_gap`); None if
        Lanczos did not converge and the graph has more than
        :data:`~p2pfl.topology.spectrum.DENSE_GAP_MAX_NODES` nodes.  For a schedule, the
        per-round equivalent of one period's contraction (:attr:`Schedule.round_gap`)."""
        if self.schedule is not None:
            return self.schedule.round_gap
        return spectral_gap(self.mixing)

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
        See :func:`load_topology`, or a schedule spec (``one_peer_exponential:N``,
        ``one_peer:FILE.json`` or ``dynamic:FILE.json``, :mod:`.schedules`).
    scheme : str
        See :func:`mixing_weights`.  A schedule fixes its own weights: only the
        default, ``metropolis``, is taken with one.
    seed : int, optional
        Seed for random generator specs without their own ``SEED``.

    Returns
    -------
    Topology
    """
    if is_schedule(spec):
        sched = parse_schedule(spec)
        if scheme != "metropolis":
            raise TopologyError(f"{sched.name} changes its mixing weights with its phases; "
                                f"a mixing scheme ({scheme}) does not apply to it")
        G, warnings = validate(sched.base_graph())
        return Topology(G, list(range(sched.n)), mixing(G, scheme), warnings, sched)
    G, warnings = validate(load_topology(spec, seed=seed))
    G, labels = relabel(G)
    _distinct_as_text(labels)
    warnings.extend(_unweighted_edges(G, scheme))
    mix = mixing(G, scheme, labels=labels)
    warnings.extend(_negligible_links(mix))
    return Topology(G, labels, mix, warnings)


def _distinct_as_text(labels: list) -> None:
    """Results, profiles and keys name nodes by their labels as text: two labels of one
    text (``1`` and ``"1"``, the tuple ``(0, 1)`` and the string ``"(0, 1)"``) would
    be one node there (a profile's ``[nodes.1]`` took either)."""
    from ..spec import plain_label

    seen: dict = {}
    for label in labels:
        text = str(plain_label(label))
        if text in seen:
            raise TopologyError(f"nodes {seen[text]!r} and {label!r} read the same as text "
                                f"({text}) in results and profiles: rename one")
        seen[text] = label


def _unweighted_edges(G, scheme: str) -> list:
    """A warning when edges lack the affinity ``--mixing`` reads: each counts as 1, which
    next to bandwidths in the thousands is almost no weight, and with none weighted
    ``--mixing weight`` is the metropolis matrix (``attr:NAME`` that no edge has is an
    error of :mod:`.mixing`)."""
    attr = "weight" if scheme == "weight" else scheme[5:] if scheme.startswith("attr:") \
        else None
    edges = [d for u, v, d in G.edges(data=True) if u != v] if attr else []
    missing = sum(attr not in d for d in edges)
    if not missing:
        return []
    if missing < len(edges):
        return [f"{missing} of {len(edges)} edges have no {attr}: each counts as 1 "
                f"(--mixing {scheme})"]
    return ["no edge has a weight: --mixing weight counts each as 1, which is the "
            "metropolis matrix"] if attr == "weight" else []


#: A mixing weight at or below this carries nothing a float64 round of gossip can see.
NEGLIGIBLE_WEIGHT = 1e-12


def _negligible_links(mix):
    """A warning when the graph holds together only through links of negligible weight:
    affinities spanning many orders of magnitude (``--mixing weight``, an edge of 1e300)
    leave the rest at ~0, and the spectral gap is then 0 to float precision."""
    rows, cols = mix.entries()
    strong = mix.data > NEGLIGIBLE_WEIGHT
    if strong.all() or mix.n < 2:
        return []
    G = nx.Graph()
    G.add_nodes_from(range(mix.n))
    G.add_edges_from(zip(rows[strong].tolist(), cols[strong].tolist()))
    parts = nx.number_connected_components(G)
    if parts == 1:
        return []
    return [f"the mixing weights keep the graph connected only through links of weight "
            f"<= {NEGLIGIBLE_WEIGHT:g} (without them it falls into {parts} parts), so "
            "gossip barely mixes across them: are the edge weights on one scale?"]


def count(n: int, noun: str) -> str:
    """``1 edge``, ``8 edges``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def describe(topo):
    """One-line summary: nodes, edges, degrees, diameter (n <= 2000), spectral gap."""
    G = topo.graph
    deg = [d for _, d in G.degree()]
    diameter = nx.diameter(G) if topo.n <= 2000 else "skipped (n > 2000)"
    if topo.schedule is not None:
        return _describe_schedule(topo, deg, diameter)
    gap = topo.spectral_gap
    gap = (f"{gap:.4g}" if gap is not None
           else f"not found (Lanczos did not converge in {spectrum.LANCZOS_STEPS} steps, "
                f"and n > {spectrum.DENSE_GAP_MAX_NODES} is too large to decompose)")
    return (f"{count(topo.n, 'node')}, {count(G.number_of_edges(), 'edge')}, degree min/mean/max "
            f"{min(deg)}/{np.mean(deg):.2f}/{max(deg)}, diameter {diameter}, "
            f"spectral gap {gap}")


def _describe_schedule(topo, deg, diameter):
    sched = topo.schedule
    if sched.period_gap is None:
        gap = (f"gap over one period not computed (more than {schedules.DENSE_MAX_NODES} "
               "nodes, or too many phases, for the dense product)")
    else:
        exact = " (exact averaging)" if sched.contraction == 0.0 else ""
        span = ("one period" if sched.measured in (0, sched.period)
                else f"its first {sched.measured} phases (then within 1e-9 of the average)")
        gap = (f"gap over {span} {sched.period_gap:.4g}{exact}, per round "
               f"{sched.round_gap:.4g}")
    peers = max(ph.most_heard for ph in sched.phases)
    what = "one peer" if peers == 1 else f"up to {peers} peers"
    return (f"{count(topo.n, 'node')}, {what} a round in {count(sched.period, 'phase')} "
            f"over {count(topo.graph.number_of_edges(), 'edge')} "
            f"(degree min/mean/max {min(deg)}/{np.mean(deg):.2f}/{max(deg)}, diameter "
            f"{diameter}), {gap}")
