"""Time-varying topologies: the one-peer exponential graph (Ying et al., NeurIPS 2021),
its phases, its exact averaging, its plan, the node's phase rules and clusters that run
it (schedule files: tests/test_schedule_files.py)."""

import json
import os
from collections import Counter
from types import SimpleNamespace

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
from p2pfl.topology.schedules import listeners
from tests._inproc import cli_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (2, 3, 5, 8, 12, 16, 33, 64)


def _sources(s, k) -> np.ndarray:
    """Whom each node hears in one-peer phase ``k`` (itself when it idles)."""
    out = np.arange(s.n)
    rows, cols = s.phases[k].entries()
    out[rows] = cols
    return out


def _targets(s, k) -> np.ndarray:
    """Whom each node sends to in one-peer phase ``k`` (itself when it idles)."""
    return np.array([to[0] if to else i for i, to in enumerate(listeners(s.phases[k]))])


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
    (["--robust", "clip"], "--robust clip (adaptive) clips nothing with one neighbour"),
    (["--robust", "trimmed:0.4"], "no node hears more than 1 a round on one_peer_exponential:8"
                                  ": it would drop none; use clip:TAU"),
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
    # rounds enough that the others still run when it is back at 1.3 s (800 took 3.5 s)
    res = run_cluster("one_peer_exponential:8", rounds=800, round_timeout=5.0, quiet=True,
                      in_process=True, eval_every=400, profiles=str(profile),
                      out=str(tmp_path / "run"))
    s, recs = res.summary, res.metrics
    assert s["failed_nodes"] == {}
    assert sum(1 for r in recs if r["node"] == 2 and r.get("offline")) == 1
    for node in (0, 1, 3, 4, 5, 6, 7):
        walls = sorted(r["wall_s"] for r in recs if r["node"] == node)
        assert max(b - a for a, b in zip(walls, walls[1:])) < 2.0
    assert max(r["wall_s"] for r in recs if r["node"] != 2) > 1.5  # still running then
    final = [r["accuracy"] for r in recs if r["round"] == 800 and r["accuracy"] is not None]
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
                         _streak=Counter(), _since={}, misses=Counter())
    me.heard = lambda rnd: GossipNode.heard(me, rnd)
    assert GossipNode.expected(me, 1) == [7]
    GossipNode.account(me, 1, {})  # 7 missed round 1
    assert GossipNode.expected(me, 4) == []  # silent since: not waited for
    last[7] = 1  # its round-1 message came, late
    assert GossipNode.expected(me, 4) == [7]
    GossipNode.account(me, 4, {7: object()})
    assert me._streak[7] == 0 and me.misses[7] == 1
    assert GossipNode.expected(me, 2) == [6] and GossipNode.expected(me, 3) == [4]


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


@pytest.mark.parametrize("topology, flags, words", [
    ("ring:8", ["--robust", "clip"], "no node on ring:8 has a neighbour of at most 0.25"),
    ("line:3", ["--robust", "clip"], "it would clip nothing; use clip:TAU"),
    ("torus:4x4", ["--robust", "trimmed:0.25", "--schedule", "async"],
     "without a barrier (--schedule async)"),
    ("torus:4x4", ["--robust", "clip", "--schedule", "async"], "use clip:TAU, or --schedule"),
    ("ring:4", ["--robust", "clip:inf"], "invalid --robust 'clip:inf'"),
])
def test_robust_rules_that_would_act_on_nothing_are_refused(topology, flags, words):
    """Adaptive clipping keeps the neighbours holding 3/4 of the weight: with two or
    three equal ones (a ring, a line) it clipped nothing; trimming and adaptive clipping
    without a barrier saw one model or none (async trimmed:0.25 left the honest nodes at
    0.15-0.24, 0.10 without it: BENCHMARKS.md); clip:inf clips nothing."""
    res = cli_here("cluster", "--topology", topology, *flags, "--dry-run")
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert cli_here("cluster", "--topology", "torus:4x4", "--robust", "clip",
                    "--dry-run").returncode == 0  # four equal neighbours: one is clipped
    assert cli_here("cluster", "--topology", "torus:4x4", "--robust", "clip:0.5",
                    "--schedule", "async", "--dry-run").returncode == 0
