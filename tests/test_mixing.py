"""Tests for p2pfl.topology's mixing matrices (dense and by rows) and spectral gap."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl import topology as tp
from p2pfl.errors import TopologyError

ALL_SCHEMES = ["metropolis", "uniform", "weight", "attr:bandwidth"]


def _assert_doubly_stochastic(W):
    assert W.dtype == np.float64
    np.testing.assert_allclose(W, W.T, atol=1e-12)
    assert (W >= -1e-15).all()
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)


# ------------------------------------------------------------- mixing weights

def _graphs():
    G = nx.les_miserables_graph()
    H = nx.Graph(nx.karate_club_graph())
    return [tp.relabel(g)[0] for g in (G, H)] + [
        tp.load_topology(s) for s in ("ring:7", "star:9", "torus:3x4", "exponential:10",
                                      "barabasi_albert:40:3", "complete:5", "line:2")]


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_mixing_weights_properties(scheme):
    for G in _graphs():
        if scheme.startswith("attr:"):  # one edge has it; the others count as 1
            nx.set_edge_attributes(G, {next(iter(G.edges)): 2.5}, scheme[5:])
        W = tp.mixing_weights(G, scheme)
        assert W.shape == (len(G), len(G))
        _assert_doubly_stochastic(W)
        off = W.copy()
        np.fill_diagonal(off, 0)
        A = nx.to_numpy_array(G, nodelist=range(len(G)))
        assert ((off > 0) == (A > 0)).all()  # support is exactly the edges


def test_metropolis_formula_and_unit_weights():
    G = tp.load_topology("star:4")  # hub degree 3, leaves degree 1
    W = tp.mixing_weights(G)
    assert W[0, 1] == pytest.approx(1 / 4) and W[0, 0] == pytest.approx(1 / 4)
    assert W[1, 1] == pytest.approx(3 / 4)
    U = tp.mixing_weights(G, "uniform")
    assert U[1, 2] == 0 and U[1, 0] == pytest.approx(1 / 4)
    np.testing.assert_allclose(tp.mixing_weights(G, "weight"), W)  # no weights = MH
    nx.set_edge_attributes(G, 5.0, "weight")
    np.testing.assert_allclose(tp.mixing_weights(G, "weight"), W)  # scale invariant


def test_mixing_weight_errors():
    G = nx.path_graph(3)
    with pytest.raises(TopologyError, match="unknown mixing scheme 'fancy'; valid: metropolis"):
        tp.mixing_weights(G, "fancy")
    with pytest.raises(TopologyError, match="relabel"):
        tp.mixing_weights(nx.path_graph(["a", "b"]))
    G[0][1]["weight"] = -1.0
    with pytest.raises(TopologyError, match=r"edge \(0, 1\) has weight -1.0"):
        tp.mixing_weights(G, "weight")
    G[0][1]["weight"] = "heavy"
    with pytest.raises(TopologyError, match="non-numeric weight 'heavy'"):
        tp.mixing_weights(G, "weight")
    G[0][1]["weight"] = 0.0
    with pytest.raises(TopologyError, match="leave the graph in 2 components"):
        tp.mixing_weights(G, "weight")
    with pytest.raises(TopologyError, match="unknown mixing scheme"):
        tp.build("ring:4", scheme="attr:")
    # a named attribute no edge has is a typo, not unit affinities
    with pytest.raises(TopologyError, match="no edge has the attribute 'wieght' .*: weight"):
        tp.mixing_weights(G, "attr:wieght")


@st.composite
def connected_graphs(draw):
    n = draw(st.integers(2, 24))
    G = nx.Graph()
    G.add_nodes_from(range(n))
    for i in range(1, n):  # random spanning tree keeps it connected
        G.add_edge(i, draw(st.integers(0, i - 1)), weight=draw(st.floats(0.01, 100)))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    for u, v in draw(st.lists(pairs, max_size=3 * n)):
        if u != v:
            G.add_edge(u, v, weight=draw(st.floats(0.01, 100)))
    return G


@settings(max_examples=60, deadline=None)
@given(connected_graphs(), st.sampled_from(["metropolis", "uniform", "weight"]))
def test_mixing_weights_random_graphs(G, scheme):
    W = tp.mixing_weights(G, scheme)
    _assert_doubly_stochastic(W)
    assert 0 < tp.spectral_gap(W) <= 1 + 1e-12
    if scheme != "weight":  # bit for bit the definition on the dense adjacency matrix,
        # which the weights no longer go through (three n x n temporaries)
        assert np.array_equal(W, _dense_reference(G, scheme))


def _dense_reference(G, scheme):
    A = (nx.to_numpy_array(G, nodelist=range(len(G)), weight=None) > 0).astype(float)
    np.fill_diagonal(A, 0.0)
    d = A.sum(axis=1)
    ref = A / (1.0 + (np.maximum.outer(d, d) if scheme == "metropolis" else d.max()))
    np.fill_diagonal(ref, 1.0 - ref.sum(axis=1))
    return ref


@pytest.mark.parametrize("scheme", ["metropolis", "uniform"])
def test_a_multigraph_with_loops_mixes_as_its_simple_graph(scheme):
    M = nx.MultiGraph([(0, 1), (0, 1), (1, 2), (2, 0), (2, 2), (2, 3)])
    assert np.array_equal(tp.mixing_weights(M, scheme), _dense_reference(M, scheme))
    assert np.array_equal(tp.mixing_weights(M, scheme),
                          tp.mixing_weights(nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)]), scheme))


# --------------------------------------------------------------- spectral gap

@pytest.mark.parametrize("spec,expected,rel", [
    ("ring:16", 0.051, 0.02),
    ("ring:64", 0.0032, 0.02),
    ("torus:4x4", 0.40, 0.01),
    ("torus:8x8", 0.117, 0.01),
    ("exponential:16", 0.50, 0.01),
    ("exponential:64", 0.33, 0.02),
])
def test_spectral_gap_reference_values(spec, expected, rel):
    """Reference values: ALGORITHMS.md, "Peer-to-peer gossip", MH weights."""
    assert tp.build(spec).spectral_gap == pytest.approx(expected, rel=rel)


def test_spectral_gap_random_regular():
    gaps = [tp.build(f"random_regular:4:16:{seed}").spectral_gap for seed in range(5)]
    assert all(0.15 < g < 0.45 for g in gaps)
    assert np.mean(gaps) == pytest.approx(0.28, abs=0.07)


def test_spectral_gap_edge_cases():
    assert tp.spectral_gap(np.eye(1)) == 1.0
    assert tp.spectral_gap(np.full((4, 4), 0.25)) == pytest.approx(1.0)
    assert tp.spectral_gap(np.eye(3)) == pytest.approx(0.0)
    assert tp.build("complete:8").spectral_gap == pytest.approx(1.0)
    with pytest.raises(TopologyError, match="square"):
        tp.spectral_gap(np.ones((2, 3)))


# ------------------------------------------------------ by rows, and Lanczos

@pytest.mark.parametrize("spec", ["torus:30x30", "random_regular:4:1000:1", "star:1000",
                                  "small_world:1000:4:0.1:1", "barabasi_albert:1000:2:1",
                                  "exponential:1024", "torus:3x400", "complete:60"])
def test_lanczos_finds_the_dense_spectral_gap(spec):
    """Lanczos on the sparse rows agrees with the dense eigendecomposition, which
    took about 280 s at 16,384 nodes (torus:3x400's gap is 4.9e-5)."""
    m = tp.build(spec).mixing
    lanczos = tp.spectrum._lanczos_gap(m, tp.spectrum.LANCZOS_STEPS, 1e-4)
    assert lanczos == pytest.approx(tp.spectral_gap(m.toarray()), rel=1e-6)


def test_a_gap_lanczos_cannot_find_is_dense_circulant_or_none(monkeypatch):
    """A ring's and a line's largest eigenvalues below 1 are too close together for
    few steps (ring:3000 for 1,024): up to DENSE_GAP_MAX_NODES the dense way answers;
    above it a circulant matrix (the ring) has its gap in closed form, and another
    (the line) has none, and says so."""
    monkeypatch.setattr(tp.spectrum, "LANCZOS_MIN_NODES", 100)
    monkeypatch.setattr(tp.spectrum, "LANCZOS_STEPS", 64)
    dense = {s: tp.spectral_gap(tp.build(s).weights) for s in ("ring:600", "line:600")}
    for spec in dense:
        assert tp.spectrum._lanczos_gap(tp.build(spec).mixing, 64, 1e-4) is None
        assert tp.build(spec).spectral_gap == dense[spec]
    monkeypatch.setattr(tp.spectrum, "DENSE_GAP_MAX_NODES", 599)
    assert tp.build("ring:600").spectral_gap == pytest.approx(dense["ring:600"], rel=1e-9)
    big = tp.build("line:600")
    assert big.spectral_gap is None
    assert tp.describe(big).endswith("spectral gap not found (Lanczos did not converge "
                                     "in 64 steps, and n > 599 is too large to decompose)")
    monkeypatch.setattr(tp.spectrum, "LANCZOS_STEPS", 1024)  # enough for the ring
    assert tp.spectrum._lanczos_gap(tp.build("ring:600").mixing, 1024, 1e-4) == \
        pytest.approx(dense["ring:600"], rel=1e-6)


@pytest.mark.parametrize("spec", ["ring:64", "ring:65", "exponential:64", "exponential:100",
                                  "complete:20", "circulant:30:1,4,7"])
def test_a_circulant_gap_in_closed_form_is_the_dense_one(spec):
    if spec.startswith("circulant"):  # not a generator: networkx's, of offsets 1, 4, 7
        topo = tp.build(nx.circulant_graph(30, [1, 4, 7]))
    else:
        topo = tp.build(spec)
    assert tp.spectrum._circulant_gap(topo.mixing) == pytest.approx(
        tp.spectral_gap(topo.weights), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("spec", ["torus:8x8", "line:30", "star:20", "random_regular:4:64"])
def test_a_matrix_that_is_not_circulant_has_no_closed_form_gap(spec):
    assert tp.spectrum._circulant_gap(tp.build(spec).mixing) is None


def test_a_ring_of_16384_nodes_has_its_gap():
    """Not found before (Lanczos needs more steps; the dense way would take ~280 s):
    4/3 sin²(π/n) for a ring's Metropolis weights, 1/3 each."""
    n = 16384
    topo = tp.build(f"ring:{n}")
    assert topo.spectral_gap == pytest.approx(4 / 3 * np.sin(np.pi / n) ** 2, rel=1e-9)
    assert "spectral gap 4.902e-08" in tp.describe(topo)


def test_the_mixing_rows_are_the_dense_matrix():
    """Rows, self-weights and products of the sparse matrix are the dense one's, bit
    for bit, and a zero-affinity edge keeps its (zero) entry."""
    G = nx.barabasi_albert_graph(300, 3, seed=2)
    for u, v in G.edges():
        G.edges[u, v]["weight"] = 0.0 if (u + v) % 23 == 0 else 1.0 + (u * 7 + v) % 5
    for scheme in ("metropolis", "uniform", "weight"):
        topo = tp.build(G, scheme=scheme)
        m, W = topo.mixing, topo.weights
        assert np.array_equal(m.toarray(), W) and np.array_equal(m.diag, np.diag(W))
        for i in (0, 17, 299):
            cols, w = m.row(i)
            assert cols.tolist() == topo.neighbours(i)
            assert np.array_equal(w, W[i, cols])
        x = np.random.default_rng(0).standard_normal(300)
        np.testing.assert_allclose(m.matvec(x), W @ x, rtol=0, atol=1e-14)
    assert 0.0 in tp.build(G, scheme="weight").mixing.data
    with pytest.raises(ValueError):
        m.diag[0] = 1.0


def test_unvalidated_graphs_mix_as_a_dense_matrix_filled_in_edge_order():
    """Graphs that did not go through validate(): of parallel edges (a multigraph's, a
    directed graph's two ways) the last one's affinity counts, the first bad edge in the
    graph's own order is named, and an unknown scheme is said before the labels."""
    M = nx.MultiGraph()
    M.add_edge(0, 1, weight=2)
    M.add_edge(0, 1, weight=5)
    M.add_edge(1, 2, weight=1)
    simple = nx.Graph([(0, 1, {"weight": 5}), (1, 2, {"weight": 1})])
    assert np.array_equal(tp.mixing_weights(M, "weight"), tp.mixing_weights(simple, "weight"))
    D = nx.DiGraph([(1, 0, {"weight": 2}), (0, 1, {"weight": 5}), (1, 2, {"weight": 1})])
    assert np.array_equal(tp.mixing_weights(D, "weight"), tp.mixing_weights(simple, "weight"))
    bad = nx.Graph()
    bad.add_nodes_from(range(4))
    bad.add_edge(0, 3, weight=-2.0)
    bad.add_edge(0, 2, weight=-1.0)
    bad.add_edges_from([(1, 2), (1, 3)])
    with pytest.raises(TopologyError, match=r"edge \(0, 3\) has weight -2.0"):
        tp.mixing(bad, "weight")
    with pytest.raises(TopologyError, match="unknown mixing scheme 'bogus'"):
        tp.mixing(nx.path_graph(["a", "b"]), "bogus")


def test_weights_on_many_scales_warn_that_the_graph_barely_mixes():
    """An edge of 1e300 among edges of 1 scales the others to 1e-300: the gap was 0 and
    nothing said why.  A zero-weight edge (no link) and weights on one scale say
    nothing."""
    ring = nx.cycle_graph(4)
    nx.set_edge_attributes(ring, 1.0, "weight")
    ring[0][1]["weight"] = 1e300
    topo = tp.build(ring, scheme="weight")
    assert topo.spectral_gap < 1e-12
    assert [w for w in topo.warnings if "falls into 3 parts" in w], topo.warnings
    ring[0][1]["weight"] = 1e6  # one scale (1e-6 of the largest): no warning
    assert tp.build(ring, scheme="weight").warnings == []
    ring[0][1]["weight"] = 0.0  # a link of no weight; the others still connect the ring
    assert tp.build(ring, scheme="weight").warnings == []


@pytest.mark.parametrize("weight, words", [(-5, "has bandwidth -5"), ("fast", "has non-numeric")])
def test_a_bad_weight_names_its_edge_by_the_files_labels(weight, words):
    # named nodes: the message said "edge (3, 5)", ids that p2pfl topology, failing on the
    # same weight, had no way of showing
    G = nx.Graph()
    G.add_edges_from([("gateway", "library"), ("library", "lab-a"), ("lab-a", "gateway")],
                     bandwidth=100.0)
    G["library"]["lab-a"]["bandwidth"] = weight
    with pytest.raises(TopologyError, match=rf"edge \('library', 'lab-a'\) {words}"):
        tp.build(G, scheme="attr:bandwidth")
