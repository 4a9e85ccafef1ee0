"""Faults a real run meets: a worker killed or stopped mid-run, a run stopped early.

Real node processes, real signals.  What must hold: a dead worker is left out of
the coordinator's rounds at once; a stopped one costs the round time-out at most
twice; a process stopped when every other node is done does not hold the
launcher; a run stopped by ``--target-accuracy`` ends cleanly, with byte totals
that agree; a failed node's last accuracy is not in the final figures.
"""

import contextlib
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from p2pfl.metrics import read_metrics
from tests._remote import await_records, records, remote_cluster
from tests._forked import CLI, Forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(out, *flags):
    return Forked([*CLI, "cluster", "--dataset", "digits", "-q", "--out", str(out), *flags],
                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def _run(out, *flags):
    """A ``p2pfl cluster`` process, killed on the way out whatever happened."""
    proc = _start(out, *flags)
    try:
        yield proc
    finally:
        proc.kill()


def _pid(out, label):
    with open(os.path.join(out, "nodes.json")) as fh:
        return next(n["pid"] for n in json.load(fh) if n["label"] == label)


def _records(out):
    try:
        return read_metrics(os.path.join(out, "metrics.jsonl"))
    except (OSError, ValueError):
        return []


def _signal_when(out, label, ready, proc, sig, timeout=90):
    """Send ``sig`` to node ``label``'s process once ``ready(records)``; its pid."""
    deadline = time.monotonic() + timeout
    while not ready(_records(out)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not get there"
        time.sleep(0.02)
    pid = _pid(out, label)
    os.kill(pid, sig)
    return pid


def _signal_after(proc, out, records: int, sig) -> tuple:
    """``sig`` to the launcher once ``records`` records are written; its (stdout, stderr)."""
    deadline = time.monotonic() + 90
    while len(_records(out)) < records:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    return proc.communicate(timeout=60)


def _summary(out):
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)


def _coordinator_rounds(recs):
    return sum(r["role"] == "coordinator" for r in recs)


def _failures(recs, worker):
    """Error codes the coordinator recorded for ``worker``, round by round."""
    return [code for r in recs if r["role"] == "coordinator"
            for w, code in r["failed"] if w == worker]


def test_a_killed_worker_is_left_out_of_the_rounds_at_once(tmp_path):
    """Before: every round after the death waited its full time-out for the dead
    worker (here 5 s a round, over a minute in all)."""
    out = tmp_path / "run"
    with _run(out, "--mode", "fedavg", "--nodes", "4", "--rounds", "60",
              "--round-timeout", "5") as proc:
        _signal_when(out, 2, lambda r: _coordinator_rounds(r) >= 3, proc, signal.SIGKILL)
        t_kill = time.monotonic()
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - t_kill
    assert proc.returncode == 0, err
    s, recs = _summary(out), _records(out)
    assert "2" in s["failed_nodes"]
    codes = _failures(recs, 2)
    assert codes.count("timeout") <= 1, codes  # at most the round it died in
    coord = [r for r in recs if r["role"] == "coordinator"]
    # left out after the round it died in (the kill lands a few rounds after the test
    # sees round 3: round 11 in a CI run once the launcher was forked)
    died = min(r["round"] for r in coord if any(w == 2 for w, _ in r.get("failed") or []))
    after = [r for r in coord if r["round"] > died]
    assert len(after) >= 10 and all(r["participants"] == r["replies_ok"] == 3
                                    for r in after), [
        (r["round"], r["participants"], r["replies_ok"], r.get("failed")) for r in after]
    assert took < 40, f"{took:.1f} s after the kill"
    # its last accuracy is of a model that never finished: not in the final figures
    last = {r["node"]: r["accuracy"] for r in recs
            if r["role"] == "worker" and r.get("accuracy") is not None}
    assert 2 in last
    assert s["accuracy_mean"] == pytest.approx(np.mean([last[w] for w in (0, 1, 3)]))
    assert s["accuracy_clean_mean"] == pytest.approx(s["accuracy_mean"])


def test_a_stopped_worker_costs_two_time_outs_and_does_not_hold_the_run(tmp_path):
    """SIGSTOP: alive, silent.  The coordinator stops waiting after two time-outs (it
    still sends it its instructions); once the others are done the launcher sees the
    process stopped and fails it after a round time-out, not after 120 s of silence."""
    out = tmp_path / "run"
    took, _ = _stop_node_1(out, lambda r: _coordinator_rounds(r) >= 2, "--mode", "fedavg",
                        "--nodes", "3", "--rounds", "60", "--round-timeout", "2")
    s, recs = _summary(out), _records(out)
    assert "stopped" in s["failed_nodes"]["1"]
    codes = _failures(recs, 1)
    # then silent rounds, not waited for, until the launcher sees its process stopped
    # and it is left out (12 rounds ended before the stop landed once the launcher was
    # forked, not started afresh: 60 now)
    assert 1 <= codes.count("timeout") <= 2 and set(codes) <= {"timeout", "silent"}, codes
    # 2 time-outs, then one round time-out once the others are done: far below 120 s
    assert took < 30, f"{took:.1f} s after the stop"


def test_a_worker_behind_serves_the_newest_instruction(tmp_path):
    """A worker paused for 3 s finds the instructions of the rounds it missed queued.  It
    served each, oldest first: every reply reached a coordinator that had moved on and
    dropped it (91 of them in a 3 s pause; with STC, the residual each carried was lost
    too).  Now it applies them in order, which keeps STC's global model as before, and
    trains for, and answers, the newest alone."""
    out = tmp_path / "run"
    with _run(out, "--mode", "stc", "--nodes", "3", "--rounds", "150", "--round-timeout",
              "1", "--eval-every", "50") as proc:
        pid = None
        try:
            pid = _signal_when(out, 1, lambda r: _coordinator_rounds(r) >= 2, proc,
                               signal.SIGSTOP)
            time.sleep(3.0)
            _resume(pid)
            _, err = proc.communicate(timeout=100)
        finally:
            _resume(pid)
    assert proc.returncode == 0, err
    s = _summary(out)
    assert s["instructions_skipped_total"] >= 5, s["instructions_skipped_total"]
    # at most the replies under way when it was paused, and the one it was training for
    assert s["dropped"].get("stale_round", 0) <= 3, s["dropped"]
    assert s["dropped"].get("undecodable", 0) == 0 and s["failed_nodes"] == {}
    finals = s["final_accuracy_by_worker"]  # every worker ends with the global model
    assert len(set(finals.values())) == 1 and finals["1"] > 0.8, finals


def test_a_stopped_gossip_node_does_not_hold_the_launcher(tmp_path):
    out = tmp_path / "run"
    took, _ = _stop_node_1(out, lambda r: len(r) >= 8, "--topology", "ring:4", "--rounds", "15",
                        "--round-timeout", "1")
    s = _summary(out)
    assert list(s["failed_nodes"]) == ["1"] and "stopped" in s["failed_nodes"]["1"]
    assert took < 20, f"{took:.1f} s after the stop"


def _stop_node_1(out, ready, *flags) -> tuple:
    """Run, SIGSTOP node 1 once ``ready(records)``; the seconds from then to the end,
    and what the launcher said (stderr)."""
    pid = None
    with _run(out, *flags) as proc:
        try:
            pid = _signal_when(out, 1, ready, proc, signal.SIGSTOP)
            t_stop = time.monotonic()
            _, err = proc.communicate(timeout=100)
            took = time.monotonic() - t_stop
        finally:
            _resume(pid)
    assert proc.returncode == 0, err
    return took, err


def test_fedavg_stopped_at_its_target_ends_cleanly(tmp_path):
    """The coordinator ends the run after the round whose global accuracy reached the
    target and hands every worker the final model.  Before, the workers were stopped
    too, and the coordinator recorded one more round of time-outs with a stale model."""
    s, recs, err = _finished_run(tmp_path / "run", "--mode", "fedavg", "--nodes", "4",
                                 "--rounds", "200", "--target-accuracy", "0.8",
                                 "--round-timeout", "10", "--no-quiet")  # over -q
    at = s["target_reached_at_round"]
    assert at is not None and at < 200
    said = [line for line in err.splitlines() if line.startswith("target reached")]
    assert said == [f"target reached: the coordinator's accuracy "
                    f"{s['global_accuracy_per_round'][-1][1]:.4f} >= 0.8 at round {at}; "
                    "stopping the nodes"], err
    coord = [r for r in recs if r["role"] == "coordinator"]
    assert all(r["failed"] == [] for r in coord), [r["failed"] for r in coord if r["failed"]]
    assert s["misses_total"] == 0 and s["failed_nodes"] == {}
    last = coord[-1]["round"]
    # the coordinator ends the run after the round that reached the target (it knows
    # its target): before, the launcher's stop reached it a round or two later
    assert last == at
    rounds = [r for r, _ in s["global_accuracy_per_round"]]
    assert rounds == sorted(set(rounds)) and rounds[-1] == last
    finals = [r for r in recs if r["role"] == "worker" and r.get("final")]
    assert sorted(r["node"] for r in finals) == [0, 1, 2, 3]
    assert all(r["round"] == last for r in finals)
    assert s["accuracy_mean"] >= 0.8
    assert s["bytes_sent_total"] == s["bytes_sent_counted_by_nodes"] == s["bytes_received_total"]
    assert s["bytes_up_total"] + s["bytes_down_total"] == s["bytes_sent_total"]


def test_gossip_stopped_at_its_target_counts_every_byte(tmp_path):
    """Nodes stopped half-way through a round sent that round's model, and no record
    counts it: summary.json adds it, so the total agrees with the nodes' counters."""
    s, recs, err = _finished_run(tmp_path / "run", "--topology", "ring:4", "--rounds", "300",
                                 "--target-accuracy", "0.85")
    assert s["target_reached_at_round"] is not None
    assert err == ""  # quiet (-q): not even the target's line
    assert s["bytes_sent_total"] == s["bytes_sent_counted_by_nodes"]
    # what a stopped node had not read yet was sent, and never received
    assert s["bytes_received_total"] <= s["bytes_sent_total"]
    assert sum(r["bytes_sent"] for r in recs) <= s["bytes_sent_total"]


@pytest.mark.parametrize("flags", [("--mode", "fedavg", "--nodes", "4"),
                                   ("--topology", "ring:4")])
def test_a_run_interrupted_mid_round_records_no_round_it_did_not_play(tmp_path, flags):
    """Ctrl-C reaches the nodes in different rounds.  Before, the coordinator recorded
    the round whose gather the stop cut short, every worker a time-out in it (4 misses
    in the summary and a global accuracy repeated), and in gossip the summary's
    consensus_last and accuracy_per_round ended on a round that only some nodes
    played: its network mean was theirs (one node: a distance of 0)."""
    out = tmp_path / "run"
    with _run(out, *flags, "--rounds", "100000", "--eval-every", "5") as proc:
        _, err = _signal_after(proc, out, 120, signal.SIGINT)
    assert proc.returncode == 130, err
    s, recs = _summary(out), _records(out)
    assert s["interrupted"] is True and s["misses_total"] == 0, s["misses_total"]
    coord = [r for r in recs if r["role"] == "coordinator"]
    assert all(r["failed"] == [] for r in coord), coord[-1]
    if coord:  # a server round is whole when the coordinator recorded it (a worker's
        # own record may come too late for the launcher's shutdown wait)
        assert s["accuracy_per_round"][-1][0] <= coord[-1]["round"]
        return
    last = {}
    for r in recs:
        last[r["node"]] = max(last.get(r["node"], 0), r["round"])
    whole = min(last.values())  # every node played it
    assert s["accuracy_per_round"][-1][0] <= whole, last
    assert s["consensus_last"]["round"] <= whole and s["consensus_last"]["max"] > 0


def test_a_quiet_run_stopped_by_sigterm_still_prints_its_folder(tmp_path):
    """DIR=$(p2pfl cluster -q ...) of a run a batch system cancels: its summary is
    written, so the folder is printed too (before: nothing on stdout)."""
    out = tmp_path / "run"
    with _run(out, "--topology", "ring:2", "--rounds", "100000") as proc:
        stdout, err = _signal_after(proc, out, 10, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert stdout == f"{out}\n"
    assert err == f"p2pfl: terminated; all nodes stopped; results so far in {out}\n"
    assert _summary(out)["interrupted"] is True


def _finished_run(out, *flags):
    """A run to its end (exit 0): its summary, records and standard error."""
    with _run(out, *flags) as proc:
        _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return _summary(out), _records(out), err


def _resume(pid):
    """SIGCONT a stopped process that may be gone already (then nothing to do)."""
    try:
        if pid:
            os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def test_two_records_of_one_node_in_one_round_are_both_kept(tmp_path):
    """A worker stopped early records its last round, then its final model, as the
    same round: neither record may be lost (the bytes of the first were), and the
    node counts once in that round's mean accuracy."""
    from p2pfl.metrics import MetricsSink

    rounds = []
    sink = MetricsSink(str(tmp_path), [0, 1, 2], closer=2,
                       on_round=lambda rnd, rows: rounds.append((rnd, len(rows))))
    sink.add({"round": 1, "node": 0, "accuracy": 0.5, "bytes_sent": 10})
    sink.add({"round": 1, "node": 0, "accuracy": 0.7, "bytes_sent": 0, "final": True})
    sink.add({"round": 1, "node": 1, "accuracy": 0.9, "bytes_sent": 10})
    sink.add({"round": 1, "node": 2, "accuracy": None, "bytes_sent": 30})
    sink.close()
    assert sink.written == 4 and sink.bytes_sent == 50
    assert rounds == [(1, 3)]
    assert sink.accuracy_per_round() == [[1, pytest.approx(0.8)]]
    assert sink.summary(exclude={1})["accuracy_mean"] == 0.7
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 4


def test_a_server_run_whose_workers_all_died_ends(tmp_path):
    """Nothing is left to learn from: the coordinator ends the run instead of playing
    its remaining rounds against nobody, and the run says it failed."""
    out = tmp_path / "run"
    with _run(out, "--mode", "fedavg", "--nodes", "2", "--rounds", "400",
              "--round-timeout", "2") as proc:
        for label in (0, 1):
            _signal_when(out, label, lambda r: _coordinator_rounds(r) >= 3, proc,
                         signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    s, recs = _summary(out), _records(out)
    assert sorted(s["failed_nodes"]) == ["0", "1"]
    assert _coordinator_rounds(recs) < 400


def test_the_coordinator_waits_for_all_when_all_are_silent():
    """Its waiting rule alone: silent twice in a row and unheard since, not waited
    for; heard again (a late reply of the round it first missed), waited for; and
    when every participant is silent, every one is waited for."""
    from types import SimpleNamespace

    from p2pfl.server.coordinator import Coordinator

    heard = {0: 5, 1: 2}  # worker -> latest round heard from

    class Rt:
        @staticmethod
        def heard_from(w, since):
            return heard.get(w, -1) >= since

    me = SimpleNamespace(rt=Rt(), _silent={1: (2, 3), 2: (1, 4), 3: (2, 4)})
    assert Coordinator.expected(me, [0, 1, 2, 3]) == [0, 2]
    heard[3] = 4  # its late reply of round 4 came
    assert Coordinator.expected(me, [0, 1, 2, 3]) == [0, 2, 3]
    assert Coordinator.expected(me, [1]) == [1]  # nobody else: wait for it after all
    Coordinator.account(me, 6, [SimpleNamespace(worker=2, ok=False, error={"code": "silent"}),
                                SimpleNamespace(worker=1, ok=True, error=None),
                                SimpleNamespace(worker=0, ok=False, error={"code": "offline"})])
    assert me._silent == {2: (2, 4), 3: (2, 4)}


def test_a_restarted_coordinator_learns_which_workers_died(tmp_path):
    """Worker 0 dies for good (its one restart used up), then the coordinator dies and
    is restarted: the replacement is told that worker 0 is gone before it starts, and
    never waits for it."""
    out = tmp_path / "run"
    with _run(out, "--mode", "fedavg", "--nodes", "3", "--rounds", "500", "--round-timeout",
              "5", "--restart", "on-failure:1", "--eval-every", "50") as proc:
        first = _signal_when(out, 0, lambda r: _coordinator_rounds(r) >= 3, proc,
                             signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _pid(out, 0) == first:  # restarted: nodes.json has its new pid
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        n = _coordinator_rounds(_records(out))
        _signal_when(out, 0, lambda r: _coordinator_rounds(r) >= n + 5, proc, signal.SIGKILL)
        n = _coordinator_rounds(_records(out))
        _signal_when(out, "coordinator", lambda r: _coordinator_rounds(r) >= n + 5, proc,
                     signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    s, recs = _summary(out), _records(out)
    assert list(s["failed_nodes"]) == ["0"] and s["restarts"] == 2
    assert _failures(recs, 0).count("timeout") <= 2  # the rounds it died in, at most
    coord = sorted(r["round"] for r in recs if r["role"] == "coordinator")
    assert coord == list(range(1, 501))


def test_a_remote_node_that_dies_is_noticed_by_its_lost_connection(tmp_path):
    """``--listen``: the launcher sees no process of a node started elsewhere.  A killed
    one closes its connection: after ``--lost-after`` (10 s by default; 2 s here) down it
    has failed.  Before, the run waited for every other node to finish, then for 120 s
    of silence."""
    out = tmp_path / "run"
    with remote_cluster(out, 3, "--topology", "ring:3", "--rounds", "150", "--round-timeout",
                        "1", "--lost-after", "2") as (launcher, _, nodes):
        await_records(out, 9, launcher)
        nodes[1].kill()
        t_kill = time.monotonic()
        launcher.wait(timeout=90)
        took = time.monotonic() - t_kill
    assert launcher.returncode == 0
    s = _summary(out)
    assert s["failed_nodes"] == {"1": "its connection was lost for 2 s"}
    assert took < 40, f"{took:.1f} s after the kill"


def test_remote_nodes_stopped_by_a_signal_tell_their_launcher(tmp_path):
    """Ctrl-C to one `p2pfl node` mid-run, SIGTERM to another: each records its completed
    rounds and says so to the launcher, with its final counters, and the launcher fails
    it a second later and tells its peers.  Before, the launcher waited for their
    connections to be down ``--lost-after`` (60 s here), and their counters were lost."""
    import threading

    out = tmp_path / "run"
    why = {1: "its process was interrupted (SIGINT)", 3: "its process was terminated (SIGTERM)"}
    with remote_cluster(out, 4, "--topology", "ring:4", "--rounds", "100000", "--lost-after",
                        "60", quiet=False) as (launcher, _, nodes):
        said: list = []  # (when, line)
        threading.Thread(target=lambda: said.extend((time.monotonic(), x)
                                                    for x in launcher.stderr),
                         daemon=True).start()
        await_records(out, 40, launcher)  # records come in batches: some of every node
        for node, sig in ((1, signal.SIGINT), (3, signal.SIGTERM)):
            nodes[node].send_signal(sig)
        sent = time.monotonic()
        assert [nodes[1].wait(timeout=30), nodes[3].wait(timeout=30)] == [130, 143]
        lines = [f"node {node} failed: {text}" for node, text in why.items()]
        while not all(any(line in x for _, x in list(said)) for line in lines):
            assert launcher.poll() is None and time.monotonic() < sent + 30, said
            time.sleep(0.02)
        took = [next(t for t, x in list(said) if line in x) - sent for line in lines]
        left = max(r["round"] for r in records(out) if r["node"] in why)
        while not any(r["node"] not in why and r["round"] > left + 20 for r in records(out)):
            assert launcher.poll() is None and time.monotonic() < sent + 60  # peers go on
            time.sleep(0.02)
        launcher.send_signal(signal.SIGTERM)  # its summary: their counters are in it
        launcher.wait(timeout=60)
    assert all(0.9 < t < 5 for t in took), f"failed {took} s after the signals"
    s = _summary(out)
    assert s["failed_nodes"] == {str(node): text for node, text in why.items()}
    assert s["bytes_sent_counted_by_nodes"] == s["bytes_sent_total"] > 0


def test_a_signal_to_the_launcher_and_its_remote_nodes_stops_them_all(tmp_path):
    """SIGTERM to every process of a multi-host run at once (a batch system's cancel, a
    whole terminal's Ctrl-C): the nodes' byes, handled before the launcher's own signal
    or during its shutdown, must not fail them, and their final counters count (the
    grace itself: the test below).  Before, the nodes' counters were lost, and an error
    sent at once failed them."""
    out = tmp_path / "run"
    with remote_cluster(out, 3, "--topology", "ring:3", "--rounds", "100000") as (
            launcher, _, nodes):
        await_records(out, 30, launcher)
        for p in [*nodes, launcher]:  # the nodes first: their byes are there first
            p.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
        codes = [p.wait(timeout=30) for p in nodes]
    assert launcher.returncode == 128 + signal.SIGTERM
    assert codes == [128 + signal.SIGTERM] * 3
    s = _summary(out)
    assert s["interrupted"] is True and s["failed_nodes"] == {}
    assert s["bytes_sent_counted_by_nodes"] == s["bytes_sent_total"] > 0


def test_remote_nodes_of_a_run_stopped_mid_way_exit_non_zero(tmp_path):
    """The launcher alone stopped by SIGTERM mid-run: its remote nodes were stopped and
    exited 0, silently, as from a finished run, and a batch script read success (a
    helper's audit).  They now say so and exit 1."""
    out = tmp_path / "run"
    with remote_cluster(out, 3, "--topology", "ring:3", "--rounds", "100000") as (
            launcher, _, nodes):
        await_records(out, 30, launcher)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
        said = [p.communicate(timeout=30)[1] for p in nodes]
    assert launcher.returncode == 128 + signal.SIGTERM
    assert [p.returncode for p in nodes] == [1] * 3, said
    assert all("the launcher stopped the run before its end" in e for e in said), said


def test_remote_nodes_give_up_soon_after_their_launcher_died(tmp_path):
    """A launcher killed mid-run (SIGKILL: no stop reaches anyone): its host refuses the
    nodes' reconnections, and each node gives up once its connection has been down
    10 s (`--lost-after`, 3 s here: ``benchmarks/dead_launcher.py`` measures the
    default).  Before, the nodes went on training among themselves, recording to no one,
    until 4 start time-outs (240 s) of silence."""
    out = tmp_path / "run"
    with remote_cluster(out, 2, "--topology", "ring:2", "--rounds", "100000",
                        node_flags=("--lost-after", "3")) as (launcher, addr, nodes):
        await_records(out, 10, launcher)
        launcher.kill()
        killed = time.monotonic()
        said = [p.communicate(timeout=60)[1] for p in nodes]
        took = time.monotonic() - killed
    assert [p.returncode for p in nodes] == [1, 1], said
    for err in said:
        assert f": the connection to the launcher at {addr} was down for 3 s" \
            in err, err
    assert 3 < took < 20, f"{took:.1f} s after the kill"


def test_a_lost_connection_to_the_launcher_is_named_as_such_though_silence_began_first():
    """The launcher's last word comes a heartbeat before its kill, so silence reached
    ``--lost-after`` first whenever the check ran late (a loaded machine), and the node
    blamed silence for what was a lost connection (the test above, under load).  Real
    sockets: the check that first hears of the disconnect must already count it."""
    from types import SimpleNamespace

    import zmq

    from p2pfl.launcher_link import LauncherCheck
    from p2pfl.runtime import LAUNCHER
    from p2pfl.transport.liveness import ConnectionWatch

    ctx, watch = zmq.Context(), ConnectionWatch()
    try:
        launcher = ctx.socket(zmq.ROUTER)
        port = launcher.bind_to_random_port("tcp://127.0.0.1")
        node = ctx.socket(zmq.DEALER)
        watch.watch(LAUNCHER, node)
        node.connect(f"tcp://127.0.0.1:{port}")
        said = SimpleNamespace(last_control=time.monotonic() - 35)  # limits of 30 s
        check = LauncherCheck(said, "tcp://127.0.0.1:9", 30.0, 30.0, watch)
        assert not check()  # the connection is up: silence alone ends it
        assert check.reason().startswith("no word from the launcher for 30 s")
        time.sleep(0.3)  # connected
        launcher.close(linger=0)  # the launcher dies
        time.sleep(0.5)  # its node's next check runs late
        said.last_control = time.monotonic() - 35
        assert check()  # the poll that sees the loss: down 0 s of its 30
        now = time.monotonic()
        watch.down_since[LAUNCHER] = now - 31
        assert not check()
        assert check.reason().startswith(
            "the connection to the launcher at tcp://127.0.0.1:9 was down for 30 s")
        said.last_control, watch.down_since[LAUNCHER] = now - 61, now - 1  # it flaps
        assert not check()
    finally:
        watch.forget(LAUNCHER)
        ctx.destroy(linger=0)


def test_a_node_stopped_by_a_signal_fails_when_its_grace_ends_unless_the_run_stops():
    """The launcher's side of a `p2pfl node` stopped by Ctrl-C: its counters are kept at
    once; it fails when the grace ends (and the monitor waits no longer than that),
    unless the run was stopped meanwhile, by the same signal to the whole group."""
    from p2pfl.supervision import SIGNALLED_GRACE_S, NodeHandle, Supervision

    class Launcher(Supervision):  # what the launcher's fault handling reads
        def __init__(self):
            self.nodes = {i: NodeHandle(id=i, label=i, state="ready") for i in (1, 2)}
            self._graces, self.t_start, self.ep, self.gone = {}, None, None, []
            self.log = lambda text: None
            self.on_message = lambda h, msg: self.gone.append(h.id)

    run = Launcher()
    run._signalled(run.nodes[1], {"node": 1, "signal": "SIGINT", "bytes_sent": 9})
    run._signalled(run.nodes[2], {"node": 2, "signal": "SIGTERM", "bytes_sent": 8})
    now = time.monotonic()  # the graces began a moment before
    assert run.nodes[1].final["bytes_sent"] == 9 and 0.4 < run._wait_s(now) <= 0.5
    assert 0 <= run._wait_s(now + SIGNALLED_GRACE_S - 0.1) <= 0.1
    run._fail_signalled(now + SIGNALLED_GRACE_S - 0.1)
    assert [h.state for h in run.nodes.values()] == ["ready", "ready"]
    run.nodes[2].state = "stopped"  # the run was interrupted, the launcher signalled too
    run._fail_signalled(now + SIGNALLED_GRACE_S + 0.1)
    assert (run.nodes[1].state, run.nodes[1].reason) == (
        "failed", "its process was interrupted (SIGINT)")
    assert run.nodes[2].state == "stopped" and run.gone == [1]
    assert run._graces == {} and run._wait_s(now) == 0.5


def test_a_failed_node_that_says_bye_later_stays_failed_with_its_counters():
    """A remote node failed for a lost connection (its peers were told it is gone) may
    come back and finish: its bye's counters are kept, but it stays failed.  Before,
    its bye turned it ``done``, so the summary contradicted the log's "failed"."""
    from p2pfl.supervision import NodeHandle

    h = NodeHandle(id=1, label=1, state="failed", reason="its connection was lost for 10 s")
    assert h.said_bye({"bytes_sent": 123}) is False
    assert (h.state, h.final, h.reason) == ("failed", {"bytes_sent": 123},
                                             "its connection was lost for 10 s")
    ready = NodeHandle(id=2, label=2, state="ready")
    assert ready.said_bye({"bytes_sent": 7}) is True and ready.state == "done"


def test_a_stopped_host_process_does_not_hold_an_in_process_run(tmp_path):
    """SIGSTOP to one of two host processes (--in-process): once the other host's actors
    are done, its actors fail after a round time-out, as a stopped node process does;
    they held the run for the 120 s silence limit (a 128-node run: 164 s, not 24)."""
    out = tmp_path / "run"
    took, err = _stop_node_1(out, lambda r: len(r) >= 16, "--in-process", "--procs", "2",
                        "--topology", "ring:8", "--rounds", "20", "--round-timeout", "1",
                        "--no-quiet")
    s = _summary(out)
    with open(out / "nodes.json") as fh:
        host = [n["label"] for n in json.load(fh) if n["pid"] == _pid(out, 1)]
    assert sorted(map(int, s["failed_nodes"])) == sorted(host) and len(host) == 4
    assert all("stopped" in why for why in s["failed_nodes"].values()), s["failed_nodes"]
    assert took < 20, f"{took:.1f} s after the stop"
    said = [line for line in err.splitlines() if "failed" in line and "warning" not in line]
    assert len(said) == 1 and "is stopped, and every other node finished with 4 nodes" \
        in said[0], err  # one line for the host's actors


def test_a_killed_host_process_is_said_once_with_its_signal(tmp_path):
    """SIGKILL (the OOM killer, say) to one of two host processes (--in-process): its
    actors fail, said in one line that names the signal; each of them logged "process
    exited without finishing" (512 lines at 1,024 nodes), no signal named."""
    out = tmp_path / "run"
    with _run(out, "--in-process", "--procs", "2", "--topology", "ring:8", "--rounds", "20",
              "--round-timeout", "1", "--no-quiet") as proc:
        pid = _signal_when(out, 1, lambda r: len(r) >= 16, proc, signal.SIGKILL)
        _, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    s = _summary(out)
    assert len(s["failed_nodes"]) == 4, s["failed_nodes"]
    assert all("killed by SIGKILL" in why for why in s["failed_nodes"].values())
    said = [line for line in err.splitlines() if "failed" in line and "round" not in line
            and not line.startswith("warning:")]
    assert len(said) == 1 and f"(pid {pid}) was killed by SIGKILL" in said[0], err
    # and the end says so: the run exits 0 with the others' accuracy
    assert "warning: 4 of 8 nodes failed (" in err and err.rstrip().splitlines()[-2] \
        .startswith("accuracy mean"), err
