"""The metrics sink keeps what the summary needs, not the records (a long run's would fill
the launcher's memory): its figures must equal those computed from metrics.jsonl."""

import tracemalloc
from collections import defaultdict

import numpy as np
import pytest

from p2pfl.metrics import MetricsSink, read_metrics


def _from_file(path) -> dict:
    """The summary figures, the way the sink computed them from every record it kept."""
    recs = read_metrics(path)
    last, per_round = {}, defaultdict(dict)
    for r in recs:
        if r.get("accuracy") is not None:
            last[r["node"]] = r["accuracy"]
            per_round[r["round"]][r["node"]] = r["accuracy"]
    measured = [r for r in recs if r.get("consensus_distance") is not None]
    rnd = max(r["round"] for r in measured)
    dist = [r["consensus_distance"] for r in measured if r["round"] == rnd]
    return {
        "accuracy_mean": float(np.mean(list(last.values()))),
        "accuracy_per_round": [[k, float(np.mean(list(v.values())))]
                               for k, v in sorted(per_round.items())],
        "bytes_sent_total": sum(r["bytes_sent"] for r in recs),
        "consensus_max": float(np.max(dist)),
        "consensus_median": float(np.median(dist)),
        "closer_sent": sum(r["bytes_sent"] for r in recs if r["node"] == 3),
        "records": len(recs),
    }


def test_the_summary_from_running_figures_equals_the_one_from_the_records(tmp_path):
    rng = np.random.default_rng(0)
    sink = MetricsSink(str(tmp_path), [0, 1, 2, 3], closer=3)
    for rnd in range(1, 31):
        for node in (2, 0, 3, 1):  # in any order
            rec = {"round": rnd, "node": node, "bytes_sent": int(rng.integers(1000)),
                   "bytes_received": 5,
                   "accuracy": float(rng.random()) if rnd % 3 == 0 and node != 3 else None}
            vec = rng.random(10).astype(np.float32) if rnd % 10 == 0 and node != 3 else None
            if node == 1 and rnd == 12:
                continue  # late: comes after round 13 was started
            sink.add(rec, vec)
        if rnd == 13:
            sink.add({"round": 12, "node": 1, "bytes_sent": 7, "bytes_received": 0,
                      "accuracy": 0.25})
    # a worker stopped early records its last round again, with its final model's accuracy
    sink.add({"round": 30, "node": 0, "bytes_sent": 3, "bytes_received": 0, "accuracy": 0.99})
    sink.close()
    want = _from_file(tmp_path / "metrics.jsonl")
    s = sink.summary()
    assert want["records"] == sink.written == 121
    assert s["accuracy_mean"] == want["accuracy_mean"]
    assert s["accuracy_per_round"] == want["accuracy_per_round"]
    assert s["bytes_sent_total"] == want["bytes_sent_total"]
    assert s["consensus_last"]["round"] == 30
    assert s["consensus_last"]["max"] == want["consensus_max"]
    assert s["consensus_last"]["median"] == want["consensus_median"]
    assert sink.closer_bytes_sent == want["closer_sent"]
    assert [r["round"] for r in sink.closer_records] == list(range(1, 31))


def test_the_sink_does_not_keep_the_records(tmp_path):
    """Before, every record stayed in a list: about 0.7 KB each in a real run."""
    sink = MetricsSink(str(tmp_path), range(8))
    rec = {"round": 0, "node": 0, "label": 0, "role": "gossip", "loss": 0.5, "test_loss": None,
           "accuracy": None, "neighbours_heard": 2, "misses": 0, "bytes_sent": 81000,
           "bytes_received": 81000, "wall_s": 1.5, "process_cpu_s": 1.2, "dropped": 0}
    tracemalloc.start()
    try:
        for rnd in range(1, 2001):  # kept, 16,000 records would be some 11 MB
            for node in range(8):
                sink.add(dict(rec, round=rnd, node=node, wall_s=rnd * 0.001))
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        sink.close()
    assert sink.written == 16_000
    assert grown < 1_000_000, f"{grown} bytes held after 16,000 records"


def test_accuracy_of_a_node_the_sink_was_not_told_of_counts(tmp_path):
    sink = MetricsSink(str(tmp_path), [0, 1])
    sink.add({"round": 1, "node": 0, "bytes_sent": 0, "bytes_received": 0, "accuracy": 0.5})
    sink.add({"round": 2, "node": 7, "bytes_sent": 0, "bytes_received": 0, "accuracy": 0.1})
    sink.add({"round": 1, "node": 1, "bytes_sent": 0, "bytes_received": 0, "accuracy": 0.7})
    for node in (0, 1):  # round 2 is whole
        sink.add({"round": 2, "node": node, "bytes_sent": 0, "bytes_received": 0})
    sink.close()
    assert sink.accuracy_per_round() == [[1, pytest.approx(0.6)], [2, pytest.approx(0.1)]]
    assert sink.accuracy_by_node() == {0: 0.5, 7: 0.1, 1: 0.7}


def _rec(rnd, node, acc):
    return {"round": rnd, "node": node, "bytes_sent": 0, "bytes_received": 0, "accuracy": acc}


def test_rounds_a_stop_cut_short_count_in_no_network_figure(tmp_path):
    """A stop (--target-accuracy, Ctrl-C) reaches nodes in different rounds: nodes 0 and 3
    say bye after round 5, nodes 1 and 2 after round 6, and a lone record of round 7 is
    still held when the sink closes.  Before, round 7's mean and distances were node 2's
    alone (a consensus distance of 0: perfect agreement) and ended the summary's figures."""
    rng = np.random.default_rng(1)
    sink = MetricsSink(str(tmp_path), [0, 1, 2, 3], rounds=50)
    for rnd in range(1, 7):
        for node in (0, 1, 2, 3) if rnd <= 5 else (1, 2):
            sink.add(_rec(rnd, node, 0.1 * node + 0.01 * rnd), rng.random(5).astype(np.float32))
    sink.add(_rec(7, 2, 0.9), rng.random(5).astype(np.float32))
    for node in (0, 3):
        sink.node_gone(node, stopped=True)  # stopped after round 5
    sink.add(_rec(3, 3, 0.5), rng.random(5).astype(np.float32))  # a straggler's, alone
    sink.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert len(recs) == 4 * 5 + 2 + 1 + 1  # every record is written
    assert [r["consensus_distance"] is None for r in recs if r["round"] >= 6] == [True] * 3
    assert sum(r["consensus_distance"] is None for r in recs) == 4  # and the straggler's
    s = sink.summary()
    assert s["consensus_last"]["round"] == 5 and s["consensus_last"]["max"] > 0
    assert [r for r, _ in s["accuracy_per_round"]] == [1, 2, 3, 4, 5]
    assert s["accuracy_per_round"][-1][1] == pytest.approx(np.mean([0.05, 0.15, 0.25, 0.35]))
    assert sink.accuracy_by_node() == {0: 0.05, 1: 0.16, 2: 0.9, 3: 0.5}  # each one's last


def test_a_gossip_node_that_said_bye_after_its_last_round_cuts_nothing(tmp_path):
    sink = MetricsSink(str(tmp_path), [0, 1], rounds=3)
    for rnd in range(1, 4):
        sink.add(_rec(rnd, 0, 0.5), np.ones(3, np.float32))
    sink.node_gone(0, stopped=True)  # done: its three rounds
    for rnd in range(1, 4):
        sink.add(_rec(rnd, 1, 0.7), np.zeros(3, np.float32))
    sink.close()
    s = sink.summary()
    assert [r for r, _ in s["accuracy_per_round"]] == [1, 2, 3]
    assert s["consensus_last"]["round"] == 3 and s["consensus_last"]["max"] > 0


def test_a_node_gone_early_while_the_run_goes_on_cuts_nothing(tmp_path):
    """A remote node stopped by its own Ctrl-C (then failed), and one offline when the
    run was stopped: the rounds went on without them.  Before, either froze the
    summary's per-round figures at its last round for the rest of the run."""
    sink = MetricsSink(str(tmp_path), [0, 1, 2], rounds=6)
    for rnd in range(1, 3):
        for node in (0, 1, 2):
            sink.add(_rec(rnd, node, 0.5), np.full(3, node, np.float32))
    sink.node_gone(0)  # said bye mid-run, the run not ending: failed a second later
    sink.add(dict(_rec(3, 1, None), offline=True))  # node 1 goes offline in round 3
    sink.node_gone(1, stopped=True)  # and ends, offline, when the run is stopped
    for rnd in range(3, 7):
        sink.add(_rec(rnd, 2, 0.7), np.full(3, 2, np.float32))
    sink.close()
    assert [r for r, _ in sink.summary()["accuracy_per_round"]] == [1, 2, 3, 4, 5, 6]


def test_workers_records_of_a_round_the_coordinator_did_not_play_are_not_whole(tmp_path):
    """Ctrl-C cut the coordinator's round 3 (not recorded); the workers had recorded it.
    Once the coordinator said bye, round 3 completed with the workers alone, and ended
    accuracy_per_round."""
    sink = MetricsSink(str(tmp_path), [0, 1, 2], closer=2, rounds=100)
    for rnd in (1, 2):
        for node in (0, 1, 2):
            sink.add(_rec(rnd, node, None if node == 2 else 0.5))
    for node in (0, 1):
        sink.add(_rec(3, node, 0.9))
    sink.node_gone(2, stopped=True)
    sink.close()
    assert [r for r, _ in sink.summary()["accuracy_per_round"]] == [1, 2]
    assert sink.accuracy_by_node() == {0: 0.9, 1: 0.9}


def test_a_round_one_node_played_alone_has_no_consensus_distance(tmp_path):
    """Under churn a round is whole once the nodes online have reported: with one online,
    its distance to itself was 0.0, and consensus_last said perfect consensus (a helper's
    audit).  Two or more online still get theirs, to their mean."""
    sink = MetricsSink(str(tmp_path), [0, 1, 2], rounds=3)
    for node in (0, 1, 2):
        sink.add(_rec(1, node, 0.5), np.full(3, node, np.float32))
    sink.add(dict(_rec(2, 0, None), offline=True))  # round 2: nodes 1 and 2
    sink.add(_rec(2, 1, 0.6), np.full(3, 1, np.float32))
    sink.add(_rec(2, 2, 0.6), np.full(3, 4, np.float32))
    sink.add(dict(_rec(3, 1, None), offline=True))  # round 3: node 2 alone
    sink.add(_rec(3, 2, 0.7), np.full(3, 2, np.float32))
    sink.close()
    dist = {(r["round"], r["node"]): r["consensus_distance"]
            for r in read_metrics(tmp_path / "metrics.jsonl") if "offline" not in r}
    assert dist[(3, 2)] is None
    assert dist[(2, 1)] == dist[(2, 2)] == pytest.approx(1.5 * 3 ** 0.5)  # 1.5 off, 3 axes
    assert sink.summary()["consensus_last"]["round"] == 2
