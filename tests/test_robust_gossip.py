"""Byzantine-robust gossip and Byzantine behaviours in gossip mode (issue 9)."""

import numpy as np
import pytest
import torch

from p2pfl.algorithms.attacks import alie_z, corrupt
from p2pfl.algorithms.robust import adaptive_tau, parse_robust, robust_step, trim_count
from p2pfl.errors import ConfigError


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_clipped_gossip_bounds_each_neighbour():
    own = t(0, 0)
    others = {1: t(1, 0), 2: t(0, 1), 3: t(300, 400)}  # the last is 500 away
    w = {1: 0.25, 2: 0.25, 3: 0.25}
    plain = robust_step(own, others, w, parse_robust("none"))
    assert torch.allclose(plain, t(75.25, 100.25))
    clipped = robust_step(own, others, w, parse_robust("clip:1"))
    assert torch.allclose(clipped, t(0.25 + 0.25 * 0.6, 0.25 + 0.25 * 0.8))


def test_adaptive_tau_is_a_weighted_percentile_of_the_distances():
    d = torch.tensor([1.0, 2.0, 3.0, 100.0])
    w = torch.tensor([0.25, 0.25, 0.25, 0.25])
    assert adaptive_tau(d, w, delta=0.25) == 3.0  # the farthest quarter is clipped


def test_bridge_trimming_drops_the_neighbours_extremes_and_keeps_the_own_value():
    own = t(0.0)
    others = {1: t(1.0), 2: t(2.0), 3: t(1000.0), 4: t(-1000.0)}
    w = {j: 0.2 for j in others}
    step = robust_step(own, others, w, parse_robust("trimmed:0.25"))  # b = 1 of 4
    assert torch.allclose(own + step, t(1.0))  # mean of 0, 1, 2
    # BRIDGE-T trims neighbours only: an honest node's own value is never dropped
    zeros = {j: t(0.0) for j in others}
    step = robust_step(t(100.0), zeros, w, parse_robust("trimmed:0.25"))
    assert torch.allclose(100.0 + step, t(100.0 / 3))  # mean of 100, 0, 0
    step = robust_step(t(100.0), {1: t(0.0), 2: t(10.0)}, {1: 0.3, 2: 0.3},
                       parse_robust("trimmed:0.34"))  # b = 0 of 2: all kept
    assert torch.allclose(100.0 + step, t(110.0 / 3))


def test_a_missing_neighbour_does_not_lower_what_the_rules_assume():
    """b and adaptive τ were taken of the neighbours heard: with one of four honest
    neighbours late, BRIDGE-T trimmed none of 3 and adaptive clipping clipped none, and
    a sign-flip neighbour among them was mixed in whole."""
    own, liar = t(0.0), t(1e6)
    heard = {1: t(1.0), 2: t(2.0), 3: liar}
    everyone = {1: 0.2, 2: 0.2, 3: 0.2, 4: 0.2}
    w = {j: 0.2 for j in heard}
    trimmed = parse_robust("trimmed:0.25")
    assert robust_step(own, heard, w, trimmed)[0] > 1e5  # taken of those heard: b = 0
    step = robust_step(own, heard, w, trimmed, everyone)  # b = 1 of 4: keeps 2, with own
    assert torch.allclose(step, t(1.0))
    # fewer than 2b + 1 heard: nothing to keep but the own model
    assert torch.equal(robust_step(own, {3: liar}, w, trimmed, everyone), t(0.0))
    clip = parse_robust("clip")
    assert robust_step(own, heard, w, clip)[0] > 1e5  # τ = the liar's own distance
    step = robust_step(own, heard, w, clip, everyone)  # the missing 0.2 sits at distance 0
    assert step[0] <= 0.2 * (1 + 2 + 2) + 1e-6  # the liar is clipped to τ = 2


def test_trim_counts_are_exact_floors():
    assert trim_count(0.29, 100) == 29  # 0.29 * 100 is 28.999... in floats
    assert [trim_count(0.25, k) for k in (3, 4, 7, 8)] == [0, 1, 1, 2]


@pytest.mark.parametrize("spec, word", [("clip:0", "invalid"), ("clip:-1", "invalid"),
                                        ("trimmed", "invalid"), ("trimmed:0.5", "invalid"),
                                        ("x", "unknown"), ("none:1", "invalid")])
def test_bad_robust_specs_are_refused(spec, word):
    with pytest.raises(ConfigError, match=f"^{word} --robust"):  # a known rule: its value
        parse_robust(spec)


def test_attacks_publish_what_the_papers_describe():
    rng = np.random.default_rng(0)
    start, x = t(1, 1), t(2, 0)
    assert torch.allclose(corrupt(x, start, "sign_flip", rng, []), t(-3, 5))  # start − 4Δ
    assert corrupt(x, start, "silent", rng, []) is None
    assert torch.equal(corrupt(x, start, "honest", rng, []), x)
    seen = [t(0, 0), t(4, 0)]
    z = alie_z(3)
    stack = torch.stack([x] + seen)
    assert torch.allclose(corrupt(x, start, "alie", rng, seen),
                          stack.mean(0) - z * stack.std(0))


def test_sign_flip_nodes_break_plain_gossip_and_clipping_holds(tmp_path):
    from p2pfl import run_cluster

    prof = tmp_path / "byz.toml"
    # two: one that sends start − 4Δ of an honest model only slows plain gossip (0.66)
    prof.write_text('[nodes.0]\nbehaviour = "sign_flip"\n[nodes.4]\nbehaviour = "sign_flip"\n')
    common = dict(rounds=40, quiet=True, in_process=True, eval_every=20, profiles=str(prof))
    plain = run_cluster("ring:6", out=str(tmp_path / "plain"), **common).summary
    robust = run_cluster("ring:6", robust="clip:0.5", out=str(tmp_path / "clip"),
                         **common).summary
    assert plain["accuracy_mean_honest"] < 0.5
    assert robust["accuracy_mean_honest"] > 0.85


@pytest.mark.parametrize("topology, robust, k", [
    ("ring:8", "trimmed:0.3", 2), ("torus:4x4", "trimmed:0.2", 4),
    ("line:2", "clip", 1)])
def test_a_robust_rule_that_can_act_at_no_node_is_exit_2(tmp_path, topology, robust, k):
    """trimmed:0.2 on a torus drops floor(0.2 * 4) = 0 of each node's neighbours: it
    ran as plain gossip, and looked robust.  Adaptive clipping of one neighbour leaves
    it whole."""
    from tests._inproc import cli_here

    proc = cli_here("cluster", "--topology", topology, "--dataset", "digits", "--robust",
                    robust, "--out", str(tmp_path / "o"))
    line = proc.stderr.strip()
    assert proc.returncode == 2 and len(line.splitlines()) == 1, proc.stderr
    assert f"--robust {robust}" in line and not (tmp_path / "o").exists()
    if robust.startswith("trimmed"):
        assert f"no node hears more than {k} a round on {topology}: it would drop none" in line


def test_the_smallest_beta_the_refusal_suggests_is_taken():
    """It printed 1/k to 3 digits, 0.333 for k = 3: refused in its turn.  trimmed:0,
    BRIDGE-T's mean without trimming, is taken as asked."""
    import networkx as nx

    from p2pfl.config_files import from_sources
    from p2pfl.plan import plan

    def planned(topology, robust, graph=None):
        return plan(from_sources(None, {"topology": topology, "dataset": "synthetic",
                                        "robust": robust}), graph)

    with pytest.raises(ConfigError, match="use a BETA of at least 0.334$"):
        planned("complete:4", "trimmed:0.3")
    assert planned("complete:4", "trimmed:0.334").specs
    assert planned("ring:8", "trimmed:0").specs
    with pytest.raises(ConfigError, match="no node hears more than 2 a round on the given graph"):
        planned("complete:8", "trimmed:0.3", nx.cycle_graph(5))


def test_sign_flip_on_a_new_graph_each_round_breaks_plain_gossip_and_robust_rules_hold(
        tmp_path):
    """A random 4-regular graph a round (dynamic:FILE) with nodes 0 and 4 publishing
    start − 4Δ: each round's mix clips or trims that round's neighbours."""
    import json

    import networkx as nx

    from p2pfl import run_cluster

    phases = [[list(e) for e in nx.random_regular_graph(4, 8, seed=k).edges()]
              for k in range(5)]
    (tmp_path / "g.json").write_text(json.dumps({"nodes": 8, "phases": phases}))
    prof = tmp_path / "byz.toml"
    # two (one only slowed plain gossip here: 0.88)
    prof.write_text('[nodes.0]\nbehaviour = "sign_flip"\n[nodes.4]\nbehaviour = "sign_flip"\n')
    got = {robust: run_cluster(f"dynamic:{tmp_path / 'g.json'}", robust=robust, rounds=40,
                               quiet=True, in_process=True, eval_every=20,
                               profiles=str(prof), out=str(tmp_path / robust)).summary
           for robust in ("none", "clip:0.5", "trimmed:0.25")}
    assert got["none"]["accuracy_mean_honest"] < 0.5
    for robust in ("clip:0.5", "trimmed:0.25"):
        assert got[robust]["accuracy_mean_honest"] > 0.85, (robust, got[robust])
        assert got[robust]["failed_nodes"] == {} and got[robust]["topology_phases"] == 5


def test_a_robust_rejoin_is_not_set_by_one_lying_answer():
    """A node back from an offline period (or restarted) took the first neighbour's
    catch-up answer whole: under --robust, one lying neighbour set its model.  Now
    the rule is taken over every answer, a few steps from the node's own model."""
    from p2pfl.algorithms import DPSGD
    from p2pfl.algorithms.base import REJOIN_ITERATIONS as L

    weights = {1: 0.25, 2: 0.25, 3: 0.25}
    honest, liar, own = t(10.0, 0.0), t(-1e6, 1e6), t(0.0, 0.0)
    answers = {1: (honest, None), 2: (honest.clone(), None), 3: (liar, None)}
    clip = DPSGD(2, 0.25, weights, options=DPSGD.Options(robust="clip:1"))
    x = clip.rejoin_robust(own, answers)  # each step moves at most Σ_j w_ij τ
    assert 0 < x[0] <= L * 0.5 + 1e-4 and abs(x[1]) <= L * 0.25 + 1e-4
    # a lone lying answer moves the model no farther than L rounds of the rule would
    assert clip.rejoin_robust(own, {3: (liar, None)}).norm() <= L * 0.25 + 1e-4
    trim = DPSGD(2, 0.25, weights, options=DPSGD.Options(robust="trimmed:0.34"))
    x = trim.rejoin_robust(own, answers)  # b = 1 of 3 each way: (own + honest) / 2 a step
    assert torch.allclose(x, honest * (1 - 0.5 ** L))


def test_a_robust_choco_rejoin_takes_the_copy_most_answers_hold():
    from p2pfl.algorithms import CHOCO

    algo = CHOCO(2, 0.25, {1: 0.25, 2: 0.25, 3: 0.25}, x0=t(0.0, 0.0),
                 options=CHOCO.Options(robust="clip:1"))
    copy, forged = t(1.0, 2.0), t(9e9, -9e9)
    algo.rejoin_robust(t(0.0, 0.0), {1: (t(1.0, 1.0), copy), 2: (t(1.0, 1.0), copy.clone()),
                                     3: (t(5.0, 5.0), forged)})
    assert torch.equal(algo.public.own, copy)
    # two answers, one lying: no majority, our own copy stays (a per-coordinate lower
    # median took the liar's -9e9)
    own = algo.public.own.clone()
    algo.rejoin_robust(t(0.0, 0.0), {1: (t(1.0, 1.0), t(1.5, 2.5)), 3: (t(5.0, 5.0), forged)})
    assert torch.equal(algo.public.own, own)


def test_a_node_back_among_lying_neighbours_rejoins_through_the_robust_rule(tmp_path):
    """torus:4x4 with sign-flip nodes 0, 6 and 9; node 1 (neighbours 0, 2, 5, 13) goes
    offline four times.  Taking the first answer (node 0's, the lowest id, whenever
    two were there) left node 1 at 0.10 for the rounds after it came back."""
    import json

    from p2pfl import run_cluster

    prof = tmp_path / "byz.toml"
    prof.write_text('[nodes.0]\nbehaviour = "sign_flip"\n[nodes.6]\nbehaviour = "sign_flip"\n'
                    '[nodes.9]\nbehaviour = "sign_flip"\n[nodes.1]\n'
                    'offline = [[0.8, 1.1], [1.8, 2.1], [2.8, 3.1], [3.8, 4.1]]\n')
    out = tmp_path / "run"
    run_cluster("torus:4x4", robust="clip:0.5", rounds=100, eval_every=1, quiet=True,
                profiles=str(prof), out=str(out))
    mine = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    mine = [r for r in mine if r["node"] == 1]
    back = [mine[i + 1]["accuracy"] for i, r in enumerate(mine[:-1])
            if r.get("offline") and not mine[i + 1].get("offline")]
    assert back and min(back) > 0.6, back


def test_a_robust_rejoin_on_a_time_varying_topology_weighs_every_neighbour(tmp_path):
    """Under a schedule the rule's weights were the last phase's, and an answer from a
    neighbour that phase did not name failed the node (KeyError) once it came back."""
    import json

    from p2pfl import run_cluster

    phases = [[[0, 1], [2, 3], [4, 5], [6, 7]], [[1, 2], [3, 4], [5, 6], [7, 0]],
              [[0, 2], [1, 3], [4, 6], [5, 7]], [[0, 4], [1, 5], [2, 6], [3, 7]]]
    (tmp_path / "g.json").write_text(json.dumps({"nodes": 8, "phases": phases}))
    prof = tmp_path / "off.toml"
    prof.write_text("[nodes.1]\noffline = [[0.3, 0.5], [0.8, 1.0], [1.3, 1.5]]\n")
    out = tmp_path / "run"
    s = run_cluster(f"dynamic:{tmp_path / 'g.json'}", robust="clip:0.5", rounds=300,
                    quiet=True, in_process=True, eval_every=50, profiles=str(prof),
                    out=str(out)).summary
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("offline") for r in recs if r["node"] == 1)  # it did go offline
    assert s["failed_nodes"] == {}, s["failed_nodes"]


def test_a_robust_rejoin_does_not_wait_for_a_neighbour_known_silent(tmp_path):
    """Under --robust a node back from an offline period waits for every neighbour's
    answer; a silent one (it missed its rounds, and was not heard since) never answers,
    and in-process the round time-out counts the host's idle seconds: the node sat 6 s,
    while the others played 190 rounds, and mixed nothing after (a first answer ended
    the wait before)."""
    import json

    from p2pfl import run_cluster

    prof = tmp_path / "byz.toml"
    prof.write_text('[nodes.0]\nbehaviour = "silent"\n[nodes.1]\noffline = [[4.0, 4.2]]\n')
    out = tmp_path / "run"
    run_cluster("torus:4x4", robust="clip:0.5", rounds=250, round_timeout=2, quiet=True,
                in_process=True, eval_every=50, profiles=str(prof), out=str(out))
    mine = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    mine = [r for r in mine if r["node"] == 1]
    k = next(i for i, r in enumerate(mine) if r.get("offline"))
    assert k + 1 < len(mine), "it came back after the others finished"
    back = mine[k + 1]
    assert back["wall_s"] < 4.2 + 1.5 and back["neighbours_heard"] > 0, (mine[k], back)


def test_the_round_a_node_rejoins_at_is_where_its_answering_neighbours_are_now():
    """Answers that came early in a long wait said round 12; neighbours 1 and 3 have sent
    rounds 40 and 10**9 since (3 lies).  The lower median of where each is now is 40: the
    stale 12 left the node rounds behind, and one liar cannot take it to 10**9."""
    from types import SimpleNamespace

    from p2pfl.catchup import CatchUp

    heard = {1: 40, 2: 12, 3: 10**9}
    node = CatchUp()
    node.rt = SimpleNamespace(last_heard=lambda j: heard.get(j, -1))
    replies = {j: SimpleNamespace(meta={"at": 12}) for j in (1, 2, 3)}
    assert node._their_round(replies, [1, 2, 3]) == 40
    replies[3].meta["at"] = True  # not a round: counts as none, its later rounds stand
    assert node._their_round(replies, [1, 2, 3]) == 40
    assert node._their_round(replies, []) == 0
