"""Availability: nodes that go offline and come back (issue 8).

Real sockets and real node processes or threads: an offline node neither sends
nor receives, says that it leaves, and catches up from a neighbour when back.
"""

import pytest

from p2pfl import run_cluster
from p2pfl.errors import ConfigError
from p2pfl.transport.availability import Availability, AvailabilitySpec, read_trace
from tests._inproc import cli_here


def test_churn_periods_have_the_requested_means():
    a = Availability(AvailabilitySpec(churn_on_s=3.0, churn_off_s=1.0, seed=5))
    grid = [t * 0.05 for t in range(40_000)]  # 2,000 s
    share = sum(a.offline(t) for t in grid) / len(grid)
    assert 0.2 < share < 0.3  # 1 / (3 + 1) of the time offline
    assert a.online_at(grid[next(i for i, t in enumerate(grid) if a.offline(t))]) > 0
    t = 10.0
    start = a.next_offline(t)
    assert start > t and a.offline(start) and not a.offline(start - 1e-6) or a.offline(t)


def test_a_trace_file_is_read_by_label_or_id(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("node,offline_start_s,offline_end_s\nlibrary,1,2.5\n0,3,4\n")
    assert read_trace(str(trace), ["a", "library"]) == {1: [(1.0, 2.5)], 0: [(3.0, 4.0)]}


@pytest.mark.parametrize("row, words", [
    ("nobody,1,2", "unknown node"), ("0,2,1", "offline_start_s < offline_end_s"),
    ("0,one,2", "numbers"), ("0,1", "expected node,offline_start_s,offline_end_s")])
def test_a_trace_with_a_bad_row_is_a_one_line_error_with_exit_code_2(tmp_path, row, words):
    trace = tmp_path / "bad.csv"
    trace.write_text(f"node,offline_start_s,offline_end_s\n0,1,2\n{row}\n")
    with pytest.raises(ConfigError, match=words):
        read_trace(str(trace), ["0", "1"])
    proc = cli_here("cluster", "--topology", "ring:4", "--availability", str(trace), "--out",
                    str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{trace}:3" in lines[0], proc.stderr
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def _profile(tmp_path, node: int, start: float, end: float) -> str:
    path = tmp_path / "offline.toml"
    path.write_text(f'[nodes."{node}"]\noffline = [[{start}, {end}]]\n')
    return str(path)


def test_an_offline_node_leaves_and_catches_up_without_costing_time_outs(tmp_path):
    # Enough rounds that its neighbours are still running when it comes back (a round
    # takes 1-3 ms here: 600 rounds were once over in 1.4 s, before it was back).
    res = run_cluster("ring:5", rounds=1500, round_timeout=5.0, quiet=True,
                      in_process=True, eval_every=250,
                      profiles=_profile(tmp_path, 2, 0.3, 1.3), out=str(tmp_path / "run"))
    s, recs = res.summary, res.metrics
    assert s["failed_nodes"] == {}
    mine = sorted((r for r in recs if r["node"] == 2), key=lambda r: r["round"])
    gone = [r for r in mine if r.get("offline")]
    assert len(gone) == 1  # one offline period, recorded once
    after = [r for r in mine if r["round"] > gone[0]["round"]]
    assert after and after[0]["round"] > gone[0]["round"] + 1  # caught up: skipped rounds
    assert after[0]["wall_s"] >= 1.3  # came back when its period ended
    for node in (0, 1, 3, 4):  # it said it left: nobody waited for it (time-out 5 s)
        walls = sorted(r["wall_s"] for r in recs if r["node"] == node)
        assert max(b - a for a, b in zip(walls, walls[1:])) < 2.0
    assert max(r["wall_s"] for r in recs if r["node"] != 2) > 1.5  # still running then
    others = [r["accuracy"] for r in recs if r["round"] == 1500 and r["node"] != 2]
    last = next(r for r in reversed(mine) if r.get("accuracy") is not None)
    assert last["round"] == 1500 and last["accuracy"] > min(others) - 0.05


def test_an_offline_period_inside_a_round_is_not_skipped(tmp_path):
    """Availability was checked at round starts only: a period that began and ended
    inside one round (here while waiting out a 300 ms latency) never happened, and
    the node kept sending and receiving."""
    res = run_cluster("ring:3", rounds=6, eval_every=100, quiet=True, link="latency_ms=300",
                      profiles=_profile(tmp_path, 0, 0.45, 0.55), out=str(tmp_path / "run"))
    s = res.summary
    assert s["failed_nodes"] == {}
    gone = [r for r in res.metrics if r["node"] == 0 and r.get("offline")]
    assert len(gone) == 1 and 0.45 <= gone[0]["wall_s"] < 0.55
    # nobody waited a round time-out (10 s) for the node that came back and asked to be
    # caught up: they did, until pulls ended the wait (the last record came at 11.5 s)
    assert max(r["wall_s"] for r in res.metrics) < 6


def test_a_worker_offline_while_training_does_not_reply(tmp_path):
    """A server worker checked its availability only while waiting for instructions:
    it trained through an offline period and replied."""
    prof = tmp_path / "slow.toml"
    prof.write_text('[nodes."0"]\nslowdown = 100\noffline = [[0.2, 60.0]]\n')
    res = run_cluster(mode="fedavg", nodes=2, rounds=3, eval_every=100, quiet=True,
                      profiles=str(prof), round_timeout=10.0, out=str(tmp_path / "run"))
    assert res.summary["failed_nodes"] == {}
    gone = [r for r in res.metrics if r["role"] == "worker" and r.get("offline")]
    assert len(gone) == 1 and gone[0]["node"] == 0 and gone[0]["wall_s"] >= 0.2, gone
    first = next(r for r in res.metrics if r["role"] == "coordinator" and r["round"] == 1)
    assert first["failed"] == [[0, "offline"]]  # it trained round 1 into the period


@pytest.mark.parametrize("churn", ["inf:1", "1:inf", "nan:1"])
def test_churn_means_must_be_finite(churn):
    """--churn inf:1 was accepted, and the churn process then looped for ever."""
    from p2pfl.transport.availability import parse_churn

    with pytest.raises(ConfigError, match="finite"):
        parse_churn(churn)


def test_a_trace_with_a_byte_order_mark_or_not_utf8(tmp_path):
    """A BOM made the header an unknown node; bytes that are not UTF-8 a traceback."""
    trace = tmp_path / "t.csv"
    trace.write_bytes(b"\xef\xbb\xbfnode,offline_start_s,offline_end_s\n0,1,2\n")
    assert read_trace(str(trace), ["0", "1"]) == {0: [(1.0, 2.0)]}
    trace.write_bytes(b"0,1,2\n\xff\xfe,1,2\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_trace(str(trace), ["0", "1"])


@pytest.mark.parametrize("algorithm", ["dpsgd", "choco"])
def test_churn_run_completes_and_learns(tmp_path, algorithm):
    res = run_cluster("torus:3x3", rounds=120, churn="1.0:0.35:4", quiet=True,
                      in_process=True, eval_every=20, round_timeout=5.0,
                      compression="none" if algorithm == "dpsgd" else "stc:0.05+golomb",
                      out=str(tmp_path / algorithm))
    s = res.summary
    assert s["failed_nodes"] == {} and s["algorithm"] == algorithm
    assert sum(1 for r in res.metrics if r.get("offline")) >= 5
    # churn follows the wall clock, so a loaded machine trains fewer rounds online:
    # CHOCO at stc:0.05 reached 0.77 in two CI runs (0.85+ on a quiet machine), far
    # above chance (0.1); D-PSGD sends whole models and stays above 0.8
    assert s["accuracy_mean"] > (0.8 if algorithm == "dpsgd" else 0.7), s["accuracy_mean"]
    assert s["wall_s"] < 90, s["wall_s"]  # no run of time-outs


def test_fedavg_leaves_offline_workers_out(tmp_path):
    res = run_cluster(mode="fedavg", nodes=6, rounds=30, churn="1.0:0.35:2", quiet=True,
                      in_process=True, round_timeout=5.0, out=str(tmp_path / "fl"))
    s = res.summary
    assert s["failed_nodes"] == {} and s["accuracy_mean"] > 0.9
    coord = [r for r in res.metrics if r["role"] == "coordinator"]
    assert sorted(r["round"] for r in coord) == list(range(1, 31))
    assert min(r["participants"] for r in coord) < 6  # some rounds without the absent
    assert all(code == "offline" for r in coord for _, code in r["failed"])
    # each offline period of a worker is in its records, as a gossip node's is
    gone = [r for r in res.metrics if r["role"] == "worker" and r.get("offline")]
    assert gone and all(r["accuracy"] is None for r in gone)


def test_a_node_offline_past_the_end_does_not_hold_the_run(tmp_path):
    """Offline until long after its neighbours finished: it stops waiting when they are
    done (they say so), instead of sitting out the rest of its trace."""
    # Enough rounds that node 1 is still running at 0.2 s (a round takes a few ms).
    res = run_cluster("ring:4", rounds=300, quiet=True, in_process=True, eval_every=100,
                      profiles=_profile(tmp_path, 1, 0.2, 600.0), out=str(tmp_path / "run"))
    s = res.summary
    assert s["failed_nodes"] == {} and s["wall_s"] < 60
    mine = [r for r in res.metrics if r["node"] == 1]
    assert mine[-1].get("offline")
    assert max(r["round"] for r in res.metrics if r["node"] != 1) == 300


def test_two_neighbours_offline_after_the_others_finished_are_waited_for(tmp_path,
                                                                          monkeypatch):
    """Nodes 1 and 2 of ring:5, offline together until 8 s, long after the others
    finished: nothing came from any node for the launcher's silence limit (120 s; 2 s
    here), and it failed both (a helper's audit).  Silent by their availability, they
    are waited for now (the launcher says so), and play their last rounds together."""
    from p2pfl.cluster import Launcher

    monkeypatch.setattr(Launcher, "SILENCE_S", 2.0)
    profiles = tmp_path / "pair.toml"
    profiles.write_text('[nodes."1"]\noffline = [[0.2, 8.0]]\n'
                        '[nodes."2"]\noffline = [[0.2, 8.0]]\n')
    res = run_cluster("ring:5", rounds=300, quiet=True, in_process=True, eval_every=100,
                      round_timeout=0.3, profiles=str(profiles), out=str(tmp_path / "run"))
    s = res.summary
    assert s["failed_nodes"] == {} and s["wall_s"] < 60, s["failed_nodes"]
    assert max(r["round"] for r in res.metrics if r["node"] in (1, 2)) == 300


class _OfflineUntilStopped:
    """A worker's runtime whose offline period ends with the launcher's stop (the run
    ended while the worker was offline)."""

    stopped = False

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, dst, kind, rnd, *args, **kw) -> None:
        self.sent.append(kind)

    def report(self, rnd, fields) -> None:
        pass

    def offline(self, availability) -> None:
        self.stopped = True


def test_a_server_worker_stopped_while_offline_ends_offline():
    """It asked the coordinator for the current model as it came back, stopped or not,
    and took what came: a worker offline for the whole run got the final model and a
    final record in 6 of 30 runs (16 workers, fedavg; benchmarks/offline_final.py)."""
    from types import SimpleNamespace

    from p2pfl.server.worker import Worker

    w = object.__new__(Worker)  # the loop's two branches end the run when this is False
    w.rt, w.coord, w._held, w.availability = _OfflineUntilStopped(), 16, None, None
    w.client = SimpleNamespace(behaviour="honest")
    assert w.sit_out(3) is False
    assert w.rt.sent == ["leave"]  # no pull: it hears nothing more


def test_neighbours_finishing_in_the_last_wait_offline_end_the_node_too():
    """Offline until t = 1.0 s, and its neighbours finish at 0.9 s, within the wait that
    ends the period: the node came back to play its last rounds alone (a helper's audit:
    the check ran only before each 0.5 s wait).  It now gives up, as documented."""
    from p2pfl.runtime import Runtime

    class Clock:
        now = 0.0

    class Mailbox:
        def go_offline(self):
            pass

        def come_back(self):
            pass

        def idle(self, seconds):
            Clock.now += seconds
            if Clock.now >= 0.9:
                done.add("neighbours")

    class Back:
        def online_at(self, t):
            return 1.0

    done = set()
    rt = type("R", (), {"stopped": False, "mailbox": Mailbox(),
                        "clock": lambda self: Clock.now})()
    assert Runtime.offline(rt, Back(), lambda: "neighbours" in done) is True
    Clock.now, done = 0.0, set()
    assert Runtime.offline(rt, Back(), lambda: False) is False and Clock.now == 1.0


def test_a_node_that_ended_offline_before_the_last_round_is_warned_of(tmp_path):
    """Offline until long after its neighbours finished, a node ends its run there (as
    documented); the run said only "(3 of 4 nodes)" in its progress bar, and nothing at
    its end, while the node's accuracy (of a few rounds, or none) counted or not."""
    import json

    from tests._inproc import cli_here

    prof = tmp_path / "away.toml"
    prof.write_text("[nodes.2]\noffline = [[0.0, 1000.0]]\n")
    out = tmp_path / "run"
    res = cli_here("cluster", "--topology", "ring:4", "--dataset", "digits", "--rounds", "10",
                   "--schedule", "async", "--profiles", str(prof), "--in-process",
                   "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_early"] == {"2": 1} and summary["failed_nodes"] == {}
    assert "1 of 4 nodes ended before round 10 (2 at round 1)" in res.stderr, res.stderr
