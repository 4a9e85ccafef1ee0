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
    prof.write_text('[nodes.0]\nbehaviour = "sign_flip"\n')
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
    """A random 4-regular graph a round (dynamic:FILE) with node 0 publishing
    start − 4Δ: each round's mix clips or trims that round's neighbours."""
    import json

    import networkx as nx

    from p2pfl import run_cluster

    phases = [[list(e) for e in nx.random_regular_graph(4, 8, seed=k).edges()]
              for k in range(5)]
    (tmp_path / "g.json").write_text(json.dumps({"nodes": 8, "phases": phases}))
    prof = tmp_path / "byz.toml"
    prof.write_text('[nodes.0]\nbehaviour = "sign_flip"\n')
    got = {robust: run_cluster(f"dynamic:{tmp_path / 'g.json'}", robust=robust, rounds=40,
                               quiet=True, in_process=True, eval_every=20,
                               profiles=str(prof), out=str(tmp_path / robust)).summary
           for robust in ("none", "clip:0.5", "trimmed:0.25")}
    assert got["none"]["accuracy_mean_honest"] < 0.5
    for robust in ("clip:0.5", "trimmed:0.25"):
        assert got[robust]["accuracy_mean_honest"] > 0.85, (robust, got[robust])
        assert got[robust]["failed_nodes"] == {} and got[robust]["topology_phases"] == 5
