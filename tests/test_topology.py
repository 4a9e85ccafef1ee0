"""Tests for p2pfl.topology: generators, file loading, validation (mixing weights and the
spectral gap: tests/test_mixing.py)."""

import importlib.util
import os
import re

import networkx as nx
import pytest

from p2pfl import topology as tp
from p2pfl.errors import TopologyError
from tests.test_mixing import _assert_doubly_stochastic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPO_DIR = os.path.join(ROOT, "topologies")
GRAPH_FILES = sorted(f for f in os.listdir(TOPO_DIR)
                     if not f.endswith((".py", ".md", ".schedule.json")))  # test_schedules


def _load_generate_script():
    path = os.path.join(TOPO_DIR, "generate.py")
    spec = importlib.util.spec_from_file_location("topo_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    ("bom.json", '{"nodes": [{"id": 0}, {"id": 1}, {"id": 2}, {"id": 3}], "links": ['
                 '{"source": 0, "target": 1}, {"source": 1, "target": 2}, '
                 '{"source": 2, "target": 3}, {"source": 3, "target": 0}]}'),
])
def test_byte_order_mark_is_not_a_label(tmp_path, name, text):
    """A UTF-8 BOM made '\\ufeff0' a fifth node, and the ring a path."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    topo = tp.build(path)
    assert topo.labels == [0, 1, 2, 3] and topo.graph.number_of_edges() == 4


def test_a_schedule_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows tools write one (PowerShell 5's Out-File, Notepad before 2019): the node-link
    and schedule readers said 'is not JSON: Unexpected UTF-8 BOM'."""
    path = tmp_path / "bom.json"
    phases = b'{"nodes": 4, "phases": [[[0, 1], [2, 3]], [[1, 2], [3, 0]]]}'
    path.write_bytes(b"\xef\xbb\xbf" + phases)
    assert tp.build(f"dynamic:{path}").schedule.period == 2


@pytest.mark.parametrize("text, labels", [
    ("1 01\n01 2\n2 1\n", [1, "01", 2]),  # a triangle, not an edge and a self-loop
    ("1_0 10\n10 2\n2 1_0\n", ["1_0", 10, 2]),
    ("\u0661 1\n1 2\n2 \u0661\n", ["\u0661", 1, 2]),  # an Arabic-Indic one
    ("001 002\n002 003\n003 001\n", ["001", "002", "003"]),
])
def test_an_edge_list_reads_only_plain_integers_as_numbers(tmp_path, text, labels):
    """int() read '01', '1_0' and '\u0661' as 1, 10 and 1: distinct labels of a file became
    one node, their edge a self-loop that was dropped, and '001' was reported as 1."""
    path = tmp_path / "g.edgelist"
    path.write_text(text, encoding="utf-8")
    topo = tp.build(path)
    assert topo.labels == labels and topo.graph.number_of_edges() == 3
    assert topo.warnings == []


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
    with pytest.raises(TopologyError, match="disconnected: 2 components .*; the smallest "
                                            "holds nodes 5, 6$"):
        tp.validate(nx.union(nx.path_graph(3), nx.path_graph([5, 6])))
    with pytest.raises(TopologyError, match="node 9 has no link$"):  # names the one alone
        tp.validate(nx.union(nx.path_graph(3), nx.empty_graph([9])))
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


def test_labels_of_one_text_are_refused():
    """Results and profiles name nodes by their labels as text: 1 and "1" (or a tuple
    and its text) were one node there, and a profile's [nodes.1] took either."""
    import networkx as nx

    from p2pfl.errors import TopologyError
    from p2pfl.topology import build

    with pytest.raises(TopologyError, match=r"nodes 1 and '1' read the same as text \(1\)"):
        build(nx.Graph([(1, "1"), ("1", 2), (2, 1)]))
    with pytest.raises(TopologyError, match="read the same as text"):
        build(nx.Graph([((0, 1), "(0, 1)"), ("(0, 1)", 2), (2, (0, 1))]))
    assert build(nx.grid_2d_graph(2, 2)).labels[1] == (0, 1)  # tuples alone are fine
