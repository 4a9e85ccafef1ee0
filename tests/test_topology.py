"""Tests for p2pfl.topology: generators, file loading, validation, mixing weights."""

import importlib.util
import os
import re

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl import topology as tp
from p2pfl.errors import TopologyError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPO_DIR = os.path.join(ROOT, "topologies")
GRAPH_FILES = sorted(f for f in os.listdir(TOPO_DIR) if not f.endswith((".py", ".md")))
ALL_SCHEMES = ["metropolis", "uniform", "weight", "attr:bandwidth"]


def _load_generate_script():
    path = os.path.join(TOPO_DIR, "generate.py")
    spec = importlib.util.spec_from_file_location("topo_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_doubly_stochastic(W):
    assert W.dtype == np.float64
    np.testing.assert_allclose(W, W.T, atol=1e-12)
    assert (W >= -1e-15).all()
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)


def _degrees(G):
    return sorted({d for _, d in G.degree()})


# ----------------------------------------------------------------- generators

@pytest.mark.parametrize("n", [2, 3, 16])
def test_ring(n):
    G = tp.load_topology(f"ring:{n}")
    assert G.number_of_nodes() == n and nx.is_connected(G)
    assert G.number_of_edges() == (1 if n == 2 else n)
    assert _degrees(G) == ([1] if n == 2 else [2])


def test_line_complete_star():
    G = tp.load_topology("line:5")
    assert (G.number_of_nodes(), G.number_of_edges(), _degrees(G)) == (5, 4, [1, 2])
    G = tp.load_topology("complete:6")
    assert (G.number_of_edges(), _degrees(G)) == (15, [5])
    G = tp.load_topology("star:9")
    assert (G.number_of_nodes(), G.number_of_edges(), G.degree(0)) == (9, 8, 8)


@pytest.mark.parametrize("rows,cols", [(3, 3), (4, 4), (3, 5), (8, 8)])
def test_torus_is_4_regular(rows, cols):
    G = tp.load_topology(f"torus:{rows}x{cols}")
    assert G.number_of_nodes() == rows * cols
    assert G.number_of_edges() == 2 * rows * cols
    assert _degrees(G) == [4]
    assert G.has_edge(0, cols - 1) and G.has_edge(0, (rows - 1) * cols)  # wrap-around
    assert G.has_edge(cols + 1, cols + 2) and G.has_edge(1, cols + 1)  # row-major ids


def test_small_torus_has_no_loops_or_duplicates():
    G = tp.load_topology("torus:2x5")
    assert nx.number_of_selfloops(G) == 0 and _degrees(G) == [3]
    assert _degrees(tp.load_topology("torus:1x5")) == [2]


@pytest.mark.parametrize("n,degree", [(2, 1), (3, 2), (8, 5), (16, 7), (64, 11), (100, 14)])
def test_exponential_degrees(n, degree):
    G = tp.load_topology(f"exponential:{n}")
    assert G.number_of_nodes() == n and _degrees(G) == [degree]
    hops = [2 ** k for k in range(n.bit_length()) if 2 ** k < n]
    assert all(G.has_edge(3 % n, (3 + h) % n) for h in hops if (3 + h) % n != 3 % n)


def test_random_generators_are_seeded():
    for spec in ["erdos_renyi:30:0.3", "small_world:32:4:0.2", "random_regular:4:16",
                 "barabasi_albert:30:2"]:
        a, b = tp.load_topology(spec), tp.load_topology(spec + ":0")
        assert nx.utils.graphs_equal(a, b), spec
        c = tp.load_topology(spec, seed=5)
        assert nx.utils.graphs_equal(c, tp.load_topology(spec + ":5")), spec
    assert _degrees(tp.load_topology("random_regular:4:64")) == [4]
    assert tp.load_topology("barabasi_albert:30:2:1").number_of_edges() == 2 * 28
    G = tp.load_topology("small_world:32:4:0.2:3")
    assert G.number_of_edges() == 64 and nx.is_connected(G)


def test_generator_names_are_forgiving():
    assert tp.load_topology("Small-World:10:2:0.1").number_of_nodes() == 10
    assert set(tp.GENERATORS) >= {"ring", "torus", "exponential", "erdos_renyi"}


@pytest.mark.parametrize("spec,fragment", [
    ("ring:1", "ring needs at least 2 nodes, got 1"),
    ("ring", "ring spec takes ring:N"),
    ("ring:16:3", "ring spec takes ring:N"),
    ("ring:x", "N must be an integer, got 'x'"),
    ("ring:2.5", "got '2.5'"),
    ("torus:4", "RxC"),
    ("torus:0x4", "0x4"),
    ("exponential:-3", "got -3"),
    ("erdos_renyi:10:1.5", "got 1.5"),
    ("erdos_renyi:10:0.5:abc", "SEED must be an integer, got 'abc'"),
    ("small_world:10:3:0.1", "even"),
    ("small_world:10:12:0.1", "K=12"),
    ("random_regular:3:5", "N*D even"),
    ("random_regular:7:5", "D=7"),
    ("barabasi_albert:5:5", "M=5"),
    ("hypercube:8", "generators: ring:N"),
])
def test_bad_specs(spec, fragment):
    with pytest.raises(TopologyError, match=None) as info:
        tp.load_topology(spec)
    message = str(info.value)
    assert fragment in message and "\n" not in message


# ---------------------------------------------------------------------- files

@pytest.mark.parametrize("name", GRAPH_FILES)
def test_ready_files_load_validate_relabel(name):
    topo = tp.build(os.path.join(TOPO_DIR, name))
    assert topo.n >= 8 and topo.warnings == []
    assert list(topo.graph) == list(range(topo.n))
    assert nx.is_connected(topo.graph) and not topo.graph.is_directed()
    _assert_doubly_stochastic(topo.weights)
    assert 0 < topo.spectral_gap <= 1
    assert "spectral gap" in tp.describe(topo)


def test_ready_files_match_generate_script():
    script = _load_generate_script()
    assert sorted(script.GRAPHS) == GRAPH_FILES
    assert len(GRAPH_FILES) >= 8
    for name, (_, factory) in script.GRAPHS.items():
        expected = factory()
        G = tp.load_topology(os.path.join(TOPO_DIR, name))
        assert set(G) == set(expected), name
        assert {frozenset(e) for e in G.edges()} == {frozenset(e) for e in expected.edges()}, name
        for u, v, data in expected.edges(data=True):
            for key, value in data.items():
                assert G[u][v][key] == pytest.approx(value), (name, key)


def test_string_labels_preserved():
    topo = tp.build(os.path.join(TOPO_DIR, "campus.graphml"), scheme="attr:bandwidth")
    assert {"gateway", "library", "lab-a"} <= set(topo.labels)
    i, j = topo.index("gateway"), topo.index("library")
    assert j in topo.neighbours(i)
    assert topo.graph[i][j]["bandwidth"] == 1000.0
    with pytest.raises(TopologyError, match="no node labelled 'moon'"):
        topo.index("moon")
    topo = tp.build(os.path.join(TOPO_DIR, "two_clusters.graphml"))
    assert topo.labels[:2] == ["a0", "a1"]


def test_integer_files_keep_their_ids():
    topo = tp.build(os.path.join(TOPO_DIR, "ring16.edgelist"))
    assert topo.labels == list(range(16))
    assert topo.neighbours(0) == [1, 15]


def test_edgelist_formats(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("# comment\n0 1 2.5\n1 2 {'weight': 0.5, 'delay': 3}\n2 0  # trailing\n")
    G = tp.load_topology(path)
    assert G[0][1]["weight"] == 2.5 and G[1][2] == {"weight": 0.5, "delay": 3}
    assert G[2][0] == {}
    W = tp.mixing_weights(G, "weight")
    _assert_doubly_stochastic(W)
    assert W[0, 1] > W[1, 2]


@pytest.mark.parametrize("name, text", [
    ("bom.edgelist", "0 1\n1 2\n2 3\n3 0\n"),
    ("bom.adjlist", "0 1 3\n1 2\n2 3\n"),
])
def test_byte_order_mark_is_not_a_label(tmp_path, name, text):
    """A UTF-8 BOM made '\\ufeff0' a fifth node, and the ring a path."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    topo = tp.build(path)
    assert topo.labels == [0, 1, 2, 3] and topo.graph.number_of_edges() == 4


def test_blank_and_comment_lines_in_an_adjacency_list(tmp_path):
    path = tmp_path / "g.adjlist"
    path.write_text("# a triangle\n0 1 2\n\n1 2\n   \n")
    assert tp.build(path).graph.number_of_edges() == 3


def test_edge_listed_twice_keeps_the_first_and_warns(tmp_path):
    """The later duplicate's weight silently replaced the first (5 for 1)."""
    path = tmp_path / "dup.edges"
    path.write_text("0 1 1\n1 2 1\n2 0 1\n1 0 5\n")
    topo = tp.build(path, scheme="weight")
    assert topo.graph[0][1]["weight"] == 1.0
    assert topo.warnings == ["collapsed 1 parallel edge(s) (kept the first edge's attributes)"]


def test_gml_labels(tmp_path):
    """Duplicated or partly missing labels fell back to ids without a word."""
    path = tmp_path / "g.gml"
    path.write_text('graph [ node [ id 0 label "x" ] node [ id 1 label "x" ] '
                    'edge [ source 0 target 1 ] ]')
    with pytest.raises(TopologyError, match="label 'x' is duplicated"):
        tp.build(path)
    path.write_text('graph [ node [ id 0 label "x" ] node [ id 1 ] edge [ source 0 target 1 ] ]')
    with pytest.raises(TopologyError, match="has no 'label'"):
        tp.build(path)
    path.write_text('graph [ node [ id 0 ] node [ id 1 ] edge [ source 0 target 1 ] ]')
    assert tp.build(path).labels == [0, 1]
    path.write_text('graph [ node [ id 0 label "a" ] node [ id 1 label "b" ] '
                    'edge [ source 0 target 1 ] ]')
    assert tp.build(path).labels == ["a", "b"]


def test_node_link_json_with_edges_key(tmp_path):
    path = tmp_path / "g.json"
    path.write_text('{"nodes": [{"id": "x"}, {"id": "y"}],'
                    ' "edges": [{"source": "x", "target": "y"}]}')
    topo = tp.build(path)
    assert topo.labels == ["x", "y"] and topo.graph.has_edge(0, 1)


@pytest.mark.parametrize("name,content,fragment", [
    ("garbage.graphml", "<graphml><not closed", "cannot read topology file"),
    ("garbage.gml", "graph [ node [ id", "cannot read topology file"),
    ("garbage.json", "{not json", "cannot read topology file"),
    ("garbage.edgelist", "0 1 heavy\n", "line 1"),
    ("garbage.txt", "0 1 {'weight': \n", "line 1"),
    ("bad.xyz", "0 1\n", "supported: .graphml"),
])
def test_garbage_files(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TopologyError) as info:
        tp.build(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_binary_and_missing_files(tmp_path):
    path = tmp_path / "blob.edgelist"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(TopologyError, match="cannot read topology file"):
        tp.load_topology(path)
    with pytest.raises(TopologyError, match="cannot read topology file .*no such file"):
        tp.load_topology(str(tmp_path / "missing.graphml"))
    with pytest.raises(TopologyError, match="is a directory"):
        tp.load_topology(tmp_path)
    with pytest.raises(TopologyError, match="not a file and not a generator"):
        tp.load_topology("nosuchthing")
    with pytest.raises(TopologyError, match="must be a graph"):
        tp.load_topology(42)


# ----------------------------------------------------------------- validation

def test_validate_errors():
    with pytest.raises(TopologyError, match="disconnected: 2 components"):
        tp.validate(nx.union(nx.path_graph(3), nx.path_graph([5, 6])))
    with pytest.raises(TopologyError, match="at least 2 nodes, got 0"):
        tp.validate(nx.Graph())
    with pytest.raises(TopologyError, match="at least 2 nodes, got 1"):
        tp.validate(nx.complete_graph(1))
    with pytest.raises(TopologyError, match="directed graphs are not supported yet"):
        tp.validate(nx.DiGraph([(0, 1), (1, 0)]))
    with pytest.raises(TopologyError, match="must be a networkx graph"):
        tp.validate([(0, 1)])
    with pytest.raises(TopologyError, match="disconnected"):
        tp.build("erdos_renyi:20:0.01")
    with pytest.raises(TopologyError, match=f"at most {tp.MAX_NODES} are supported"):
        tp.build(f"ring:{tp.MAX_NODES + 1}")  # its dense matrix alone: 2 GiB and more


@pytest.mark.parametrize("spec, edges", [
    ("complete:16384", "134,209,536 edges"), ("complete:2897", "4,194,856 edges"),
    ("erdos_renyi:16384:0.5", "about 67,104,768 edges, and by chance up to 67,133,730"),
    ("erdos_renyi:16384:0.0312", "about 4,187,338 edges, and by chance up to 4,197,408"),
    ("random_regular:600:16384", "4,915,200 edges"),
    ("barabasi_albert:16384:300", "4,825,200 edges"),
    ("small_world:16384:600:0.1", "4,915,200 edges")])
def test_a_spec_with_too_many_edges_is_refused_before_its_graph_is_built(spec, edges):
    """complete:16384 built for minutes towards some 22 GB before anything said no."""
    import time

    t = time.monotonic()
    with pytest.raises(TopologyError, match=re.escape(f"{spec} has {edges}; at most 4,194,304")):
        tp.load_topology(spec)
    assert time.monotonic() - t < 1.0
    assert tp.load_topology("torus:2x3").number_of_edges() == 9  # the RxC spec passes


@pytest.mark.parametrize("spec, words", [
    ("complete:-" + "9" * 200, "complete needs at least 2 nodes"),  # no float overflow
    ("erdos_renyi:-" + "9" * 400 + ":0.5", "erdos_renyi needs at least 2 nodes"),
    ("erdos_renyi:10:nan", "P must be in [0, 1], got nan"),
    ("random_regular:1000000000:10", "D must be in [1, N-1]"),
    ("small_world:100:1000000000:0.1", "K must be smaller than N")])
def test_arguments_a_generator_refuses_get_its_reason_not_an_edge_count(spec, words):
    """The edge count was checked first: these got 'has nan edges', a count of billions,
    or an OverflowError traceback."""
    with pytest.raises(TopologyError, match=re.escape(words)):
        tp.load_topology(spec)


def test_a_graph_with_too_many_edges_is_refused(monkeypatch):
    from p2pfl.topology import graph

    monkeypatch.setattr(graph, "MAX_EDGES", 14)
    with pytest.raises(TopologyError, match="topology has 15 edges; at most 14 are supported"):
        tp.validate(nx.complete_graph(6))
    assert tp.validate(nx.cycle_graph(14))[0].number_of_edges() == 14


@pytest.mark.parametrize("spec", ["torus:30x30", "random_regular:4:1000:1", "star:1000",
                                  "small_world:1000:4:0.1:1", "barabasi_albert:1000:2:1",
                                  "exponential:1024", "torus:3x400", "complete:60"])
def test_lanczos_finds_the_dense_spectral_gap(spec):
    """Lanczos on the sparse rows agrees with the dense eigendecomposition, which
    took about 280 s at 16,384 nodes (torus:3x400's gap is 4.9e-5)."""
    m = tp.build(spec).mixing
    lanczos = tp.spectrum._lanczos_gap(m, tp.spectrum.LANCZOS_STEPS, 1e-4)
    assert lanczos == pytest.approx(tp.spectral_gap(m.toarray()), rel=1e-6)


def test_a_gap_lanczos_cannot_find_is_dense_or_none(monkeypatch):
    """A ring's second and third eigenvalues are too close for few steps (ring:3000
    for 1,024): up to DENSE_GAP_MAX_NODES the dense way answers, above it the gap is
    None, and said so."""
    monkeypatch.setattr(tp.spectrum, "LANCZOS_MIN_NODES", 100)
    monkeypatch.setattr(tp.spectrum, "LANCZOS_STEPS", 64)
    dense = tp.spectral_gap(tp.build("ring:600").weights)
    assert tp.spectrum._lanczos_gap(tp.build("ring:600").mixing, 64, 1e-4) is None
    assert tp.build("ring:600").spectral_gap == dense
    monkeypatch.setattr(tp.spectrum, "DENSE_GAP_MAX_NODES", 599)
    big = tp.build("ring:600")
    assert big.spectral_gap is None
    assert tp.describe(big).endswith("spectral gap not found (Lanczos did not converge "
                                     "in 64 steps)")
    monkeypatch.setattr(tp.spectrum, "LANCZOS_STEPS", 1024)  # enough for it
    assert tp.build("ring:600").spectral_gap == pytest.approx(dense, rel=1e-6)


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


def test_validate_repairs():
    G = nx.cycle_graph(4)
    G.add_edge(2, 2)
    G.add_edge(3, 3)
    H, warnings = tp.validate(G)
    assert warnings == ["ignored 2 self-loop(s)"]
    assert nx.number_of_selfloops(H) == 0 and nx.number_of_selfloops(G) == 2
    M = nx.MultiGraph([(0, 1), (0, 1), (1, 2)])
    H, warnings = tp.validate(M)
    assert type(H) is nx.Graph and H.number_of_edges() == 2
    assert warnings and "parallel" in warnings[0]


def test_relabel_keeps_order_and_attributes():
    G = nx.Graph()
    G.add_node("z", colour="red")
    G.add_edge("z", ("a", 1), weight=3.0)
    G.add_edge(("a", 1), 7)
    H, labels = tp.relabel(G)
    assert labels == ["z", ("a", 1), 7]
    assert list(H) == [0, 1, 2]
    assert H.nodes[0]["colour"] == "red" and H[0][1]["weight"] == 3.0 and H.has_edge(1, 2)


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


def test_topology_object():
    topo = tp.build("torus:3x3", scheme="uniform")
    assert topo.n == 9 and topo.neighbours(0) == [1, 2, 3, 6]
    with pytest.raises(Exception):
        topo.n_nodes = 3  # frozen
    line = tp.describe(topo)
    assert line.startswith("9 nodes, 18 edges") and "diameter 2" in line and "\n" not in line
    G = nx.path_graph(["p", "q", "r"])
    topo = tp.build(G)
    assert topo.labels == ["p", "q", "r"] and list(G) == ["p", "q", "r"]


def test_topology_weights_are_read_only():
    topo = tp.build("ring:4")
    with pytest.raises(ValueError):
        topo.weights[0, 0] = 2.0
    assert topo.weights.copy().flags.writeable
