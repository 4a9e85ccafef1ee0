"""Schedule files: one peer a round of one's own (``one_peer:FILE``) and a graph a round
(``dynamic:FILE``): their phases, gaps, hostile contents, and clusters that run them."""

import importlib.util
import json
import os
import re

import networkx as nx
import numpy as np
import pytest

from p2pfl import run_cluster
from p2pfl.config_files import from_sources
from p2pfl.errors import TopologyError
from p2pfl.plan import plan
from p2pfl.topology import build, describe
from tests._inproc import cli_here
from tests.test_schedules import ROOT, _period_product, _sources, _targets

HYPERCUBE = os.path.join(ROOT, "topologies", "one_peer_hypercube16.schedule.json")


def _load_generate_script():
    spec = importlib.util.spec_from_file_location(
        "topo_generate", os.path.join(ROOT, "topologies", "generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ready_hypercube_file_matches_its_script_and_averages_exactly():
    script = _load_generate_script()
    assert list(script.SCHEDULES) == [os.path.basename(HYPERCUBE)]
    s = build(f"one_peer:{HYPERCUBE}").schedule
    sources = [_sources(s, k).tolist() for k in range(s.period)]
    assert sources == script.one_peer_hypercube(16)
    assert all((_targets(s, k) == _sources(s, k)).all() for k in range(4))  # pairs
    assert s.period == 4 and s.period_gap == 1.0
    np.testing.assert_allclose(_period_product(s), np.full((16, 16), 1 / 16), atol=1e-12)


def _assert_refused(spec: str, words: str) -> None:
    """``spec`` is a TopologyError saying ``words``, and one line with exit 2 on the CLI."""
    with pytest.raises(TopologyError, match=re.escape(words)):
        build(spec)
    proc = cli_here("topology", spec)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _write(tmp_path, data, name="s.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_a_file_with_idle_phases_mixes_and_its_gap_is_the_dense_products(tmp_path):
    """A node that hears itself idles (W_k's row is e_i): it sends nothing and waits for
    nothing that round, and keeps its model."""
    rows = [[1, 0, 2, 3], [0, 1, 3, 2], [2, 3, 0, 1]]
    s = build(f"one_peer:{_write(tmp_path, {'sources': rows})}").schedule
    P = _period_product(s)
    assert s.period_gap == pytest.approx(1 - np.linalg.norm(P - 0.25, 2), abs=1e-12)
    np.testing.assert_allclose(s.matrix(0)[2], [0, 0, 1, 0])
    assert s.base_graph().number_of_edges() == 4  # no self-loop for an idle phase
    res = run_cluster(f"one_peer:{tmp_path / 's.json'}", dataset="digits", rounds=6,
                      quiet=True, out=str(tmp_path / "run"))
    s2 = res.summary
    assert s2["failed_nodes"] == {} and s2["misses_total"] == 0
    busy = sum(i != j for row in rows for i, j in enumerate(row))  # per period of 3 rounds
    assert s2["messages_sent_total"] == 2 * busy
    heard = {(r["node"], r["round"]): r["neighbours_heard"] for r in res.metrics}
    for rnd in range(1, 7):
        for i in range(4):
            assert heard[i, rnd] == int(rows[(rnd - 1) % 3][i] != i)


@pytest.mark.parametrize("data, words", [
    ("{not json", "is not JSON"),
    ({"phases": [[1, 0]]}, "expected {\"sources\""),
    ({"sources": []}, "expected {\"sources\""),
    ({"sources": [[1, 0, 2], [0, 1]]}, "every phase must list 3 nodes"),
    ({"sources": [[0]]}, "2 to 16384 nodes"),
    ({"sources": [[1, 0], [1, 1]]}, "phase 1 is not a permutation"),
    ({"sources": [[1, 0, 2], [0, 1, 5]]}, "must name nodes 0..2"),
    ({"sources": [[1, [0]]]}, "must be lists of 2 integers"),
    ({"sources": [[1, False], [0, True]]}, "must be lists of 2 integers"),
    ({"sources": [[1, 10 ** 30]]}, "must name nodes 0..1"),
    ("[" * 100000, "nests its lists too deep"),
    ({"sources": [[1.0, 0.0]]}, "integers"),
    ({"sources": [[True, False]]}, "integers"),
    ({"sources": [[1, 0, 3, 2]]}, "disconnected"),
])
def test_a_bad_schedule_file_is_one_line_and_exit_2(tmp_path, data, words):
    _assert_refused(f"one_peer:{_write(tmp_path, data)}", words)
    proc = cli_here("topology", f"one_peer:{tmp_path / 'missing.json'}")
    assert proc.returncode == 2 and "cannot read schedule" in proc.stderr


def test_a_long_schedule_that_contracts_strongly_is_not_called_exact(tmp_path):
    """Random matchings of torus:4x4 over 100 rounds leave ρ about 1e-15: that is not
    exact averaging (a clamp below 1e-9 called it so, and put the per-round gap at 1);
    the per-round gap stays what 20 and 40 rounds of the same matchings give (~0.2)."""
    spec = importlib.util.spec_from_file_location(
        "random_matchings", os.path.join(ROOT, "examples", "random_matchings.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    phases = example.matchings(build("torus:4x4").graph, 100, seed=0)
    gaps = {}
    for rounds in (20, 40, 100):
        s = build(f"one_peer:{_write(tmp_path, {'sources': phases[:rounds]})}").schedule
        assert 0 < s.contraction and s.period_gap < 1.0
        gaps[rounds] = s.round_gap
    assert 0.15 < gaps[20] < 0.25 and abs(gaps[100] - gaps[40]) < 0.02, gaps
    assert "exact" not in describe(build(f"one_peer:{tmp_path / 's.json'}"))


# ------------------------------------------------------------ dynamic graphs

def test_a_dynamic_file_mixes_each_phases_graph_with_its_metropolis_weights(tmp_path):
    """Phase 0: a triangle 0-1-2 and an edge 3-4 (5 idles); phase 1: a path 5-0-3.
    Each phase's rows are its graph's Metropolis weights; the nodes' specs carry them,
    and send to exactly the neighbours that hear them."""
    path = _write(tmp_path, {"nodes": 6, "phases": [[[0, 1], [1, 2], [0, 2], [3, 4]],
                                                   [[5, 0], [0, 3]], [[1, 4], [2, 5]]]})
    s = build(f"dynamic:{path}").schedule
    W0 = s.matrix(0)
    np.testing.assert_allclose(W0[:3, :3], np.full((3, 3), 1 / 3))
    np.testing.assert_allclose(W0[3:5, 3:5], np.full((2, 2), 1 / 2))
    assert W0[5, 5] == 1.0
    W1 = s.matrix(1)
    np.testing.assert_allclose(W1[0], [1 / 3, 0, 0, 1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(W1[5], [1 / 3, 0, 0, 0, 0, 2 / 3])
    for W in (W0, W1, s.matrix(2)):
        np.testing.assert_allclose(W.sum(0), 1)
        np.testing.assert_allclose(W.sum(1), 1)
    P = _period_product(s)
    assert s.contraction == pytest.approx(np.linalg.norm(P - 1 / 6, 2), abs=1e-12)
    specs = plan(from_sources(None, {"topology": f"dynamic:{path}",
                                     "dataset": "synthetic"})).specs
    heard, own, sent = specs[0].phases[1]
    assert heard == ((3, pytest.approx(1 / 3)), (5, pytest.approx(1 / 3)))
    assert own == pytest.approx(1 / 3) and sent == (3, 5)
    assert specs[5].phases[0] == ((), 1.0, ())  # idle
    assert "up to 2 peers a round in 3 phases" in describe(build(f"dynamic:{path}"))


def test_a_cluster_on_a_new_random_graph_each_round(tmp_path):
    """A random 3-regular graph on 8 nodes each round (5 phases): each node sends to and
    hears its 3 neighbours of the round, nobody else, and learns."""
    phases = [[list(e) for e in nx.random_regular_graph(3, 8, seed=k).edges()]
              for k in range(5)]
    path = _write(tmp_path, {"nodes": 8, "phases": phases})
    res = run_cluster(f"dynamic:{path}", dataset="digits", rounds=20, quiet=True,
                      eval_every=20, out=str(tmp_path / "run"))
    s = res.summary
    assert s["failed_nodes"] == {} and s["misses_total"] == 0 and s["topology_phases"] == 5
    assert s["messages_sent_total"] == 8 * 3 * 20 and "off_phase" not in s["dropped"]
    assert all(r["neighbours_heard"] == 3 for r in res.metrics)
    assert s["accuracy_mean"] > 0.85, s["accuracy_mean"]


def test_a_dynamic_file_with_weights_of_its_own_mixes_with_them(tmp_path):
    """Edges ``[u, v, w]`` take w both ways and each self-weight the rest; a phase of
    plain edges next to them keeps its Metropolis weights.  A cluster runs on it."""
    phases = [[[0, 1, 0.5], [2, 3, 0.25]],
              [[0, 2, 0.3], [1, 3, 0.3], [0, 3, 0.2], [1, 2, 0.2]],
              [[0, 1], [1, 2], [2, 3]]]
    path = _write(tmp_path, {"nodes": 4, "phases": phases})
    s = build(f"dynamic:{path}").schedule
    np.testing.assert_array_equal(s.matrix(0), [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0],
                                                [0, 0, 0.75, 0.25], [0, 0, 0.25, 0.75]])
    W1 = s.matrix(1)
    np.testing.assert_array_equal(W1, W1.T)
    np.testing.assert_allclose(np.diag(W1), 0.5)
    assert W1[0, 2] == 0.3 and W1[3, 0] == 0.2 and W1[0, 1] == 0.0
    np.testing.assert_allclose(s.matrix(2)[1], [1 / 3, 1 / 3, 1 / 3, 0])  # Metropolis
    specs = plan(from_sources(None, {"topology": f"dynamic:{path}",
                                     "dataset": "synthetic"})).specs
    heard, own, sent = specs[3].phases[1]
    assert heard == ((0, 0.2), (1, 0.3)) and own == pytest.approx(0.5) and sent == (0, 1)
    res = run_cluster(f"dynamic:{path}", dataset="digits", rounds=18, quiet=True,
                      eval_every=18, out=str(tmp_path / "run"))
    summary = res.summary
    assert summary["failed_nodes"] == {} and summary["misses_total"] == 0
    assert summary["messages_sent_total"] == 6 * (4 + 8 + 6)  # both ways on each edge
    assert summary["accuracy_mean"] > 0.8, summary["accuracy_mean"]


@pytest.mark.parametrize("data, words", [
    ({"phases": [[[0, 1]]]}, "expected {\"nodes\": N"),
    ({"nodes": 3, "phases": []}, "expected {\"nodes\": N"),
    ({"nodes": 3.0, "phases": [[[0, 1], [1, 2]]]}, "expected {\"nodes\": N"),
    ({"nodes": 1, "phases": [[]]}, "2 to 16384 nodes"),
    ({"nodes": 3, "phases": [[[0, 1, 2]]]}, "phase 0's weights must be in (0, 1]"),
    ({"nodes": 3, "phases": [[[0, 1, 0.6], [1, 2, 0.6]]]},
     "phase 0's weights of node 1 sum to 1.2; a node's may sum to at most 1"),
    ({"nodes": 3, "phases": [[[0, 1, 0.5], [1, 2]]]},
     "phase 0's edges must all be [u, v, w] (a weight each) or all [u, v]"),
    ({"nodes": 3, "phases": [[[0, 1, 0.5, 1], [1, 2, 0.5]]]}, "must all be [u, v, w]"),
    # 1 + 1e-9 in one order of summing, more in a node's: refused here, not in the nodes
    ({"nodes": 4, "phases": [[[0, 1, 0.2765207077218265], [1, 2, 0.2990870174183882],
                              [1, 3, 0.4243922758597853]]]}, "of node 1 sum to 1"),
    ({"nodes": 3, "phases": [[[0, 1, True], [1, 2, 0.5]]]}, "phase 0's weights must be numbers"),
    ({"nodes": 3, "phases": [[[0, 1, "0.5"], [1, 2, 0.5]]]}, "weights must be numbers"),
    ({"nodes": 3, "phases": [[[0, 1, float("nan")], [1, 2, 0.5]]]}, "must be in (0, 1]"),
    ({"nodes": 3, "phases": [[[0, 1, float("inf")], [1, 2, 0.5]]]}, "must be in (0, 1]"),
    ({"nodes": 3, "phases": [[[0, 1, 0], [1, 2, 0.5]]]}, "must be in (0, 1]"),
    ('{"nodes": 3, "phases": [[[0, 1, 1' + "0" * 400 + '], [1, 2, 0.5]]]}', "must be in (0, 1]"),
    ({"nodes": 3, "phases": [[[0, 1.5, 0.5], [1, 2, 0.5]]]}, "must be lists of 2 integers"),
    ({"nodes": 3, "phases": [[[0, 1, [0.5]], [1, 2, 0.5]]]}, "weights must be numbers"),
    ({"nodes": 3, "phases": [[[0, 1], [1, 3]]]}, "phase 0's edges must name nodes 0..2"),
    ({"nodes": 3, "phases": [[[0, 1], [1, [2]]]]}, "must be lists of 2 integers"),
    ({"nodes": 3, "phases": [[[[0, 1], [1, 2]]]]}, "must be lists of 2 integers"),
    ({"nodes": 3, "phases": [[[0, True], [1, 2]]]}, "must be lists of 2 integers"),
    ({"nodes": True, "phases": [[[0, 1]]]}, "expected {\"nodes\": N"),
    ({"nodes": 2000, "phases": [[[0, 1]]] * 2100}, "edges plus phases × nodes"),
    ({"nodes": 3, "phases": [[[0, 1]], [[1, 1]]]}, "phase 1 links a node to itself"),
    ({"nodes": 3, "phases": [[[0, 1], [1, 0], [1, 2]]]}, "phase 0 lists an edge twice"),
    ({"nodes": 3, "phases": [[[0, 1.5]]]}, "must be lists of 2 integers"),
    ({"nodes": 4, "phases": [[[0, 1]], [[2, 3]]]}, "disconnected"),
    ({"nodes": 5, "phases": [[[0, 1], [2, 3]], [[1, 2], [0, 3]]]}, "node 4 has no link"),
])
def test_a_bad_dynamic_file_is_one_line_and_exit_2(tmp_path, data, words):
    _assert_refused(f"dynamic:{_write(tmp_path, data)}", words)


def test_only_a_zero_contraction_is_called_exact_averaging(tmp_path):
    """complete:3 as one Metropolis phase leaves ρ ~ 6e-17 (1/3 in floats): period_gap
    rounds to 1.0, but only ρ == 0 is exact averaging."""
    s = build(f"dynamic:{_write(tmp_path, {'nodes': 3, 'phases': [[[0, 1], [1, 2], [0, 2]]]})}")
    assert s.schedule.contraction < 1e-15
    assert "exact" not in describe(s) and "gap over one period 1" in describe(s)
    assert "(exact averaging)" in describe(build("one_peer_exponential:8"))


def test_a_config_files_schedule_is_found_beside_it(tmp_path):
    """topology = "dynamic:s.json" in a TOML file: s.json beside the file, as a graph
    file's path is."""
    (tmp_path / "conf").mkdir()
    _write(tmp_path / "conf", {"nodes": 4, "phases": [[[0, 1], [2, 3]], [[1, 2], [3, 0]]]})
    (tmp_path / "conf" / "run.toml").write_text('topology = "dynamic:s.json"\n')
    cfg = from_sources(str(tmp_path / "conf" / "run.toml"), {"dataset": "synthetic"})
    assert cfg.topology == f"dynamic:{tmp_path / 'conf' / 's.json'}"
    assert plan(cfg).summary_base["topology_phases"] == 2


def test_a_long_schedule_runs_its_nodes_config_is_not_held_to_a_header(tmp_path):
    """16 nodes and 5,000 phases of random matchings: each node's config came to 120 KB,
    past the 64 KiB a message header may hold; the node dropped it, and the run failed
    after 60 s with "no word from the launcher".  The config travels as a frame now."""
    rng = np.random.default_rng(0)
    phases = [rng.permutation(16).reshape(8, 2).tolist() for _ in range(5000)]
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"nodes": 16, "phases": phases}))
    res = cli_here("cluster", "--topology", f"dynamic:{path}", "--dataset", "digits",
                   "--rounds", "2", "--start-timeout", "20", "-q", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["topology_phases"] == 5000 and summary["failed_nodes"] == {}
