"""Asynchronous gossip: no round barrier, staleness recorded, and it still learns (issue 8)."""

import pytest
import torch

from p2pfl import run_cluster
from p2pfl.algorithms.gossip_learning import GossipLearning, GossipLearningOptions


def test_gossip_learning_merges_by_age():
    alg = GossipLearning(3, 0.0, {1: 1.0, 2: 1.0}, options=GossipLearningOptions(steps=2),
                         seed=0)
    x = torch.zeros(3)
    packet = alg.outgoing(x)  # our model has now seen 2 steps
    assert packet.meta["age"] == 2 and alg.targets([1, 2])[0] in (1, 2)
    old = (torch.full((3,), 6.0), 6.0)  # an older model: weighs 6 against our 2
    young = (torch.full((3,), 8.0), 1.0)
    out = alg.mix_async(x, {1: [old], 2: [young]})
    first = (2 * 0 + 6 * 6) / 8  # merge with node 1's, age becomes max(2, 6) = 6
    torch.testing.assert_close(out, torch.full((3,), (6 * first + 1 * 8) / 7))
    assert alg.age == 6
    with pytest.raises(ValueError):
        alg.decode(type(packet)("none", packet.frames, packet.shapes, packet.dtypes, {}))


@pytest.mark.parametrize("age", [float("inf"), float("nan"), 1e39, -1.0, 2.0 ** 60])
def test_a_hostile_age_is_refused_and_a_large_one_does_not_overflow(age):
    """An infinite age passed the check and made every later merge NaN; a finite one
    of 1e39 overflowed float32 in age · model."""
    alg = GossipLearning(3, 0.0, {1: 1.0}, options=GossipLearningOptions(steps=1), seed=0)
    packet = alg.outgoing(torch.ones(3))
    packet.meta["age"] = age
    with pytest.raises(ValueError):
        alg.decode(packet)
    packet.meta["age"] = 2.0 ** 52  # large but valid: the merge stays finite
    out = alg.mix_async(torch.ones(3), {1: [alg.decode(packet)]})
    assert bool(torch.isfinite(out).all()) and alg.age == 2.0 ** 52


@pytest.mark.parametrize("algorithm", ["gossip-learning", "dpsgd"])
def test_asynchronous_gossip_learns_without_a_barrier(tmp_path, algorithm):
    res = run_cluster("ring:6", rounds=40, algorithm=algorithm, schedule="async", quiet=True,
                      in_process=True, eval_every=10, out=str(tmp_path / algorithm))
    s = res.summary
    assert s["schedule"] == "async" and s["failed_nodes"] == {}
    assert s["accuracy_mean"] > 0.85
    assert max(r["round"] for r in res.metrics) == 40
    stale = [r["staleness"] for r in res.metrics if r.get("staleness") is not None]
    assert stale and min(stale) >= 0
    if algorithm == "gossip-learning":  # one neighbour a wake-up, not all of them (none
        # once both finished), and a leave to each neighbour at the end
        assert 6 * 10 <= s["messages_sent_total"] <= 6 * 40 + 6 * 2


def test_compressed_choco_runs_async(tmp_path):
    res = run_cluster("ring:6", rounds=60, compression="stc:0.05+golomb", schedule="async",
                      quiet=True, in_process=True, eval_every=20, out=str(tmp_path / "choco"))
    assert res.summary["algorithm"] == "choco" and res.summary["failed_nodes"] == {}
    assert res.summary["accuracy_mean"] > 0.7


def test_a_finished_asynchronous_node_is_not_sent_to_any_more(tmp_path):
    """Without a barrier a fast node finishes long before a slow neighbour, which went on
    sending it a model every iteration that nobody read: a slow node's run sent 13.9 MB,
    and 2.1 MB of it was never received nor counted as dropped.  A node says it is done
    (``leave``) in every asynchronous run, not only under churn or restarts."""
    prof = tmp_path / "slow.toml"
    prof.write_text("[nodes.0]\nslowdown = 40\n")
    res = run_cluster("ring:3", rounds=12, schedule="async", quiet=True, profiles=str(prof),
                      eval_every=12, out=str(tmp_path / "run"))
    s = res.summary
    assert s["failed_nodes"] == {} and max(r["round"] for r in res.metrics) == 12
    sent = {(a, b): n for a, b, n in s["bytes_per_link"]}
    # the others finished while node 0 was still at its first rounds: it stopped
    # sending to them
    assert sent[(0, 1)] < sent[(1, 0)] / 2 and sent[(0, 2)] < sent[(2, 0)] / 2
    # what is neither received nor counted: at most the few models under way when a
    # node said bye (6.6 % to 8.3 % of 12 rounds' bytes on a loaded machine)
    model = s["bytes_sent_total"] / s["model_messages_total"]
    assert s["bytes_sent_total"] - s["bytes_received_total"] <= 6 * model


def test_asynchronous_choco_leaves_out_a_neighbour_that_left():
    """Without a barrier nothing marks a copy stale when its owner stops sending: a
    neighbour that said it left (offline, done, dead) kept pulling the mix towards the
    copy it left behind, to the last round."""
    from p2pfl.algorithms.choco import CHOCO
    from p2pfl.algorithms.options import CHOCOOptions

    alg = CHOCO(3, 1 / 3, {1: 1 / 3, 2: 1 / 3}, x0=torch.zeros(3),
                options=CHOCOOptions(codec="none", gamma=1.0, error_feedback=True))
    x = torch.full((3,), 3.0)
    alg.public.own = x.clone()
    torch.testing.assert_close(alg.mix_async(x.clone(), {}), torch.ones(3))  # both pull
    alg.absent = frozenset({2})  # it said it left: only node 1's copy pulls
    torch.testing.assert_close(alg.mix_async(x.clone(), {}), torch.full((3,), 2.0))

