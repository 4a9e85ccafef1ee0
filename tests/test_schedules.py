"""Time-varying topologies: the one-peer exponential graph (Ying et al., NeurIPS 2021),
its phases, its exact averaging, its plan and a cluster that runs it."""

import importlib.util
import json
import os
import re
from collections import Counter
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import torch
import zmq

from p2pfl import run_cluster
from p2pfl.algorithms import DPSGD
from p2pfl.config_files import from_sources
from p2pfl.errors import ConfigError, TopologyError
from p2pfl.node import GossipNode
from p2pfl.plan import plan
from p2pfl.spec import node_spec_from_wire
from p2pfl.transport.endpoint import Endpoint
from p2pfl.transport.mailbox import Mailbox
from p2pfl.algorithms.options import DPSGDOptions
from p2pfl.topology import build, describe, exponential, parse_schedule
from tests._inproc import cli_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (2, 3, 5, 8, 12, 16, 33, 64)


def _sources(s, k) -> np.ndarray:
    """Whom each node hears in one-peer phase ``k`` (itself when it idles)."""
    out = np.arange(s.n)
    rows, cols = s.phases[k].senders()
    out[rows] = cols
    return out


def _targets(s, k) -> np.ndarray:
    """Whom each node sends to in one-peer phase ``k`` (itself when it idles)."""
    return np.array([to[0] if to else i for i, to in enumerate(s.phases[k].sent_to())])


def _period_product(s) -> np.ndarray:
    P = np.eye(s.n)
    for k in range(s.period):
        P = s.matrix(k) @ P
    return P


@pytest.mark.parametrize("n", SIZES)
def test_phases_are_permutations_over_the_exponential_graph(n):
    s = parse_schedule(f"one_peer_exponential:{n}")
    assert s.period == max(1, (n - 1).bit_length())
    for k in range(s.period):
        src, dst = _sources(s, k), _targets(s, k)
        assert sorted(src) == list(range(n))  # each node heard once a phase
        assert (dst[src] == np.arange(n)).all()  # i hears j: j sends to i
        assert ((np.arange(n) - src) % n == 1 << k).all()
        W = s.matrix(k)
        np.testing.assert_allclose(W.sum(0), 1)
        np.testing.assert_allclose(W.sum(1), 1)
    union = {frozenset(e) for e in s.base_graph().edges()}
    assert union == {frozenset(e) for e in exponential(n).edges()}


@pytest.mark.parametrize("n", SIZES + (6, 7, 24, 100))
def test_the_period_gap_is_the_dense_products_contraction(n):
    """1 − ‖W_{τ−1}⋯W_0 − J/n‖₂ from the circulant eigenvalues, against the dense
    product; a power of two averages exactly, other sizes do not."""
    s = parse_schedule(f"one_peer_exponential:{n}")
    P = _period_product(s)
    dense = 1 - np.linalg.norm(P - np.full((n, n), 1 / n), 2)
    assert s.period_gap == pytest.approx(dense, abs=1e-9)
    power_of_two = n & (n - 1) == 0
    assert (s.period_gap == 1.0) == power_of_two
    if power_of_two:
        np.testing.assert_allclose(P, np.full((n, n), 1 / n), atol=1e-12)


def test_d_psgd_with_the_plans_phases_averages_exactly_in_one_period():
    """The node specs' phases and weights, mixed by D-PSGD's own rule as the node mixes
    (w_ii and the one w_ij of the phase): after τ = 4 rounds every model is the
    average of the 16 starting ones."""
    cfg = from_sources(None, {"topology": "one_peer_exponential:16", "dataset": "synthetic"})
    specs = plan(cfg).specs
    g = torch.Generator().manual_seed(4)
    x = [torch.randn(300, generator=g, dtype=torch.float32) for _ in specs]
    mean = torch.stack(x).mean(0)
    nodes = [_node_view(s, DPSGD(300, s.self_weight, s.weights, options=DPSGDOptions()))
             for s in specs]
    for rnd in range(1, 5):
        heard = []
        for s, me in zip(specs, nodes):
            assert s.phases[(rnd - 1) % 4][2] == ((s.id + (1 << (rnd - 1))) % 16,)
            GossipNode.enter_phase(me, rnd)  # the node's own row of W_k
            heard.append(me.heard(rnd))
            assert heard[-1] == [(s.id - (1 << (rnd - 1))) % 16]
        x = [me.algorithm.mix(x[i], {j: x[j] for j in heard[i]}) for i, me in enumerate(nodes)]
    for xi in x:
        torch.testing.assert_close(xi, mean, atol=1e-6, rtol=0)


def _node_view(spec, algorithm):
    """What GossipNode's phase methods read of a node, without its runtime."""
    me = SimpleNamespace(spec=spec, phases=spec.phases, neighbours=spec.peers,
                         algorithm=algorithm)
    me.heard = lambda rnd: GossipNode.heard(me, rnd)
    return me


def test_the_plan_and_the_wire_carry_the_phases():
    p = plan(from_sources(None, {"topology": "one_peer_exponential:8", "dataset": "synthetic"}))
    s = p.specs[3]
    assert s.phases == ((((2, 0.5),), 0.5, (4,)), (((1, 0.5),), 0.5, (5,)),
                        (((7, 0.5),), 0.5, (7,)))
    assert s.weights == {j: 0.0 for j in (1, 2, 4, 5, 7)} and s.self_weight == 1.0
    assert p.summary_base["topology_phases"] == 3 and p.summary_base["spectral_gap"] == 1.0
    again = node_spec_from_wire(json.loads(json.dumps(s.to_wire())), type(s.options))
    assert again.phases == s.phases
    for phases, words in (([[[[6, 0.5]], 0.5, [4]]], "not a neighbour"),  # 6: not of 3
                          ([[[[2, 0.5]], 0.5, [6]]], "not a neighbour"),
                          ([[[[2, 0.9]], 0.5, [4]]], "row of a mixing matrix"),
                          ([[[[2, -0.5]], 1.5, [4]]], "row of a mixing matrix"),
                          ([[[[2, 0.5]], float("nan"), [4]]], "row of a mixing matrix"),
                          ([[[[2, 0.25], [2, 0.25]], 0.5, [4]]], "row of a mixing matrix")):
        with pytest.raises(ConfigError, match=words):
            node_spec_from_wire(dict(s.to_wire(), phases=phases), type(s.options))
    static = plan(from_sources(None, {"topology": "ring:8", "dataset": "synthetic"}))
    assert static.specs[0].phases == () and static.summary_base["topology_phases"] is None


@pytest.mark.parametrize("spec, words", [
    ("one_peer_exponential:1", "at least 2 nodes"),
    ("one_peer_exponential:x", "N must be an integer"),
    ("one_peer_exponential:8:3", "takes one_peer_exponential:N"),
    ("one_peer_exponential:", "takes one_peer_exponential:N"),
    ("one_peer_exponential:99999", "at most 16384"),
])
def test_bad_specs_are_topology_errors(spec, words):
    with pytest.raises(TopologyError, match=words):
        build(spec)


@pytest.mark.parametrize("flags, words", [
    (["--algorithm", "choco", "--compression", "quant:0.01"], "keeps a copy of every"),
    (["--compression", "fp16"], "keeps a copy of every"),
    (["--algorithm", "deepsqueeze", "--compression", "quant:0.01+cabac:temporal"],
     "temporal chain"),
    (["--schedule", "async"], "--schedule async"),
    (["--robust", "clip"], "--robust"),
    (["--mixing", "uniform"], "does not apply"),
    (["--mode", "fedavg"], "gossip schedule"),
])
def test_what_a_one_peer_round_cannot_run_is_exit_2_before_any_node(tmp_path, flags, words):
    proc = cli_here("cluster", "--topology", "one_peer_exponential:8", "--dataset", "digits",
                    *flags, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_describe_says_phases_and_exactness():
    line = describe(build("one_peer_exponential:16"))
    assert "one peer a round in 4 phases over 56 edges" in line
    assert "gap over one period 1 (exact averaging), per round 1" in line
    assert "exact" not in describe(build("one_peer_exponential:12"))


@pytest.mark.parametrize("algorithm, compression", [("dpsgd", "none"),
                                                    ("deepsqueeze", "quant:0.001+cabac")])
def test_a_cluster_sends_one_model_a_round_and_learns(tmp_path, algorithm, compression):
    """Real node processes: each round a node sends one model and mixes one, so a dense
    run sends exactly half of a ring's bytes (two neighbours a round)."""
    kw = dict(dataset="digits", rounds=20, quiet=True, eval_every=20)
    res = run_cluster("one_peer_exponential:8", algorithm=algorithm, compression=compression,
                      out=str(tmp_path / "op"), **kw)
    s = res.summary
    assert s["failed_nodes"] == {} and s["misses_total"] == 0 and s["topology_phases"] == 3
    assert s["messages_sent_total"] == 8 * 20
    gossip = [r for r in res.metrics if r["role"] == "gossip"]
    assert len(gossip) == 8 * 20 and all(r["neighbours_heard"] == 1 for r in gossip)
    assert s["accuracy_mean"] > 0.85, s["accuracy_mean"]
    if compression == "none":
        ring = run_cluster("ring:8", out=str(tmp_path / "ring"), **kw).summary
        assert 2 * s["bytes_sent_total"] == ring["bytes_sent_total"]


def test_an_offline_node_costs_no_time_outs(tmp_path):
    """Node 2 goes offline for a second: the nodes that hear it in their phase do not
    wait for it (it said it left), and it catches up when back."""
    profile = tmp_path / "offline.toml"
    profile.write_text('[nodes."2"]\noffline = [[0.3, 1.3]]\n')
    res = run_cluster("one_peer_exponential:8", rounds=1500, round_timeout=5.0, quiet=True,
                      in_process=True, eval_every=500, profiles=str(profile),
                      out=str(tmp_path / "run"))
    s, recs = res.summary, res.metrics
    assert s["failed_nodes"] == {}
    assert sum(1 for r in recs if r["node"] == 2 and r.get("offline")) == 1
    for node in (0, 1, 3, 4, 5, 6, 7):
        walls = sorted(r["wall_s"] for r in recs if r["node"] == node)
        assert max(b - a for a, b in zip(walls, walls[1:])) < 2.0
    final = [r["accuracy"] for r in recs if r["round"] == 1500 and r["accuracy"] is not None]
    assert len(final) == 8 and min(final) > 0.8, final


def test_a_neighbour_late_once_is_waited_for_again_in_its_next_phase():
    """The waiting rule alone: a neighbour that missed its phase is not waited for until
    heard from since that round.  Heard only every τ rounds, a late message of the
    missed round must count (the rule compared with the round before this one, which
    a one-peer neighbour never sends to us)."""
    last = {}
    rt = SimpleNamespace(away=set(), heard_from=lambda j, r: last.get(j, -1) >= r)
    phases = tuple((((j, 0.5),), 0.5, (t,)) for j, t in ((7, 1), (6, 2), (4, 4)))
    me = SimpleNamespace(rt=rt, phases=phases, neighbours=[1, 2, 4, 6, 7],
                         spec=SimpleNamespace(id=3),
                         _streak=Counter(), _missed_at={}, misses=Counter())
    me.heard = lambda rnd: GossipNode.heard(me, rnd)
    assert GossipNode.expected(me, 1) == [7]
    GossipNode.account(me, 1, {})  # 7 missed round 1
    assert GossipNode.expected(me, 4) == []  # silent since: not waited for
    last[7] = 1  # its round-1 message came, late
    assert GossipNode.expected(me, 4) == [7]
    GossipNode.account(me, 4, {7: object()})
    assert me._streak[7] == 0 and me.misses[7] == 1
    assert GossipNode.expected(me, 2) == [6] and GossipNode.expected(me, 3) == [4]


# ------------------------------------------------------------- schedule files

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


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)  # a failed test's sockets must not hang the interpreter's exit


def test_the_mailbox_takes_a_model_only_in_its_senders_phase_and_two_periods_ahead(ctx):
    """Node 3 of one_peer_exponential:8 hears 2, 1 and 7 in turn.  A model from a
    neighbour in another's round is dropped (off_phase; it used to reach the mix, which
    had no weight for it: KeyError), other kinds are not phase-bound, and a model up to
    two periods ahead is kept (a node that does not wait for a slow one runs up to a
    period ahead of it; the window was 4 rounds)."""
    box_end = Endpoint(ctx, 3, "inproc://phase-3")
    ends = {j: Endpoint(ctx, j, f"inproc://phase-{j}") for j in (1, 2, 7)}
    for e in ends.values():
        e.connect(3, box_end.address)
    spec = plan(from_sources(None, {"topology": "one_peer_exponential:8",
                                    "dataset": "synthetic"})).specs[3]
    box = Mailbox(box_end, peers=spec.peers)
    GossipNode.admit_phases(_node_view(spec, None), box)
    assert box.window == 10
    ends[1].send(3, "model", 1)  # round 1 is 2's
    ends[2].send(3, "model", 1)
    ends[1].send(3, "pull", 1)  # not a model: any round
    ends[7].send(3, "model", 9)  # phase (9 - 1) % 3 = 2: 7's, 8 rounds ahead
    got = box.collect("model", 1, [2], timeout=5.0)
    assert list(got) == [2] and box.take_requests("pull") == {1: 1}
    assert box.collect("model", 9, [7], timeout=5.0).keys() == {7}
    assert box_end.counters.dropped == {"off_phase": 1}


def test_a_neighbour_late_once_then_silent_is_not_waited_for_every_round():
    """Static ring: a neighbour whose round-1 message came late, then nothing, was
    waited for (a full time-out) in every round after: 'heard from since the first
    missed round' held for ever.  Since the latest missed round, it costs one more."""
    last = {}
    rt = SimpleNamespace(away=set(), heard_from=lambda j, r: last.get(j, -1) >= r)
    me = SimpleNamespace(rt=rt, phases=(), neighbours=[1, 7], spec=SimpleNamespace(id=0),
                         _streak=Counter(), _missed_at={}, misses=Counter())
    me.heard = lambda rnd: GossipNode.heard(me, rnd)
    GossipNode.account(me, 1, {1: object()})  # 7 missed round 1
    last[7] = 1  # ... its round-1 message came late
    waited = []
    for rnd in range(2, 8):
        waited.append(7 in GossipNode.expected(me, rnd))
        GossipNode.account(me, rnd, {1: object()})  # 7 silent from now on
    assert waited == [True, False, False, False, False, False]


def test_a_straggler_costs_no_time_outs(tmp_path):
    """32 nodes, node 0 twenty times slower: nodes that do not hear it in a round run
    ahead of it by up to a period (5 rounds), and their models reached it beyond the
    mailbox's 4-round window, were dropped, and it waited a time-out for each (5 drops,
    10 misses, 22.8 s).  The window now covers two periods."""
    profile = tmp_path / "slow.toml"
    profile.write_text('[nodes."0"]\nslowdown = 20\n')
    res = run_cluster("one_peer_exponential:32", rounds=12, round_timeout=4.0, quiet=True,
                      in_process=True, dataset="digits", eval_every=12, local_steps=5,
                      profiles=str(profile), out=str(tmp_path / "run"))
    s = res.summary
    assert s["failed_nodes"] == {} and s["misses_total"] == 0, s["misses_total"]
    assert "round_out_of_window" not in s["dropped"] and "off_phase" not in s["dropped"]
    slow = [r["neighbours_heard"] for r in res.metrics if r["node"] == 0]
    assert slow == [1] * 12


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


@pytest.mark.parametrize("data, words", [
    ({"phases": [[[0, 1]]]}, "expected {\"nodes\": N"),
    ({"nodes": 3, "phases": []}, "expected {\"nodes\": N"),
    ({"nodes": 3.0, "phases": [[[0, 1], [1, 2]]]}, "expected {\"nodes\": N"),
    ({"nodes": 1, "phases": [[]]}, "2 to 16384 nodes"),
    ({"nodes": 3, "phases": [[[0, 1, 2]]]}, "phase 0's edges must be lists of 2 integers"),
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
