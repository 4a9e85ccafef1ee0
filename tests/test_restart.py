"""Crash and restart (issue 8): real node processes killed with SIGKILL.

A restarted gossip node rejoins, catches up and continues its records; a
restarted coordinator resumes from its checkpoint with no round lost or
repeated.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests._inproc import cli_here
from tests._remote import release, spare_node
from tests._forked import CLI, Forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cluster(out, *flags):
    return Forked([*CLI, "cluster", "--dataset", "digits",
                   "--restart", "on-failure", "-q", "--out", out, *flags], cwd=ROOT)


def _records(out):
    try:
        with open(os.path.join(out, "metrics.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]
    except OSError:
        return []


def _kill_when(out, label, ready, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while not ready(_records(out)):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended too early"
        time.sleep(0.02)
    with open(os.path.join(out, "nodes.json")) as fh:
        pid = next(n["pid"] for n in json.load(fh) if n["label"] == label)
    os.kill(pid, signal.SIGKILL)
    return pid


def _remote_node(addr, i, *flags, **popen):
    """`p2pfl node --connect ADDR --id I` on loopback."""
    return Forked([*CLI, "node", "--connect", addr,
                   "--id", str(i), "--host", "127.0.0.1", *flags], cwd=ROOT, **popen)


def _assert_rejoined_once(out, node, rounds):
    """One restart, nothing failed, and ``node`` recorded every round to the last once."""
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    mine = sorted(r["round"] for r in recs if r["node"] == node)
    assert mine[-1] == rounds and len(mine) == len(set(mine))


def _summary(out):
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)


def test_a_killed_gossip_node_is_restarted_and_rejoins(tmp_path):
    out = str(tmp_path / "run")
    proc = _cluster(out, "--topology", "ring:4", "--rounds", "300", "--round-timeout", "2",
                    "--eval-every", "20", "--compression", "stc:0.05+golomb")
    try:
        old = _kill_when(out, 2, lambda recs: len(recs) >= 4 * 30, proc)
        assert proc.wait(timeout=240) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    with open(os.path.join(out, "nodes.json")) as fh:
        assert next(n["pid"] for n in json.load(fh) if n["id"] == 2) != old
    mine = sorted(r["round"] for r in recs if r["node"] == 2)
    assert mine[-1] == 300 and len(mine) == len(set(mine))  # continued, no round twice
    final = {r["node"]: r["accuracy"] for r in recs if r["round"] == 300}
    others = [a for n, a in final.items() if n != 2]
    assert final[2] > min(others) - 0.03


def test_a_node_restarted_after_its_neighbours_finished_ends_at_once(tmp_path):
    """Killed in an asynchronous run after its neighbours had finished, node 1's
    replacement found them gone: nobody answered its pull, and it trained its initial
    model alone to the last round (a helper's audit: 0.9666 fell to 0.4568), saved it as
    its final model, and its records and accuracy counted in the summary.  It now ends
    without playing, and saves no model."""
    out = str(tmp_path / "run")
    slow = tmp_path / "slow.toml"  # node 1 is far behind when its neighbours finish
    slow.write_text('[nodes."1"]\nslowdown = 50\n')
    proc = _cluster(out, "--topology", "ring:4", "--rounds", "300", "--schedule", "async",
                    "--eval-every", "50", "--save-models", "--profiles", str(slow))
    first = []  # when the first records came

    def neighbours_finished(recs):
        """Their 300 rounds take 1-4 s, node 1's 25 s; the sink holds their records until
        node 1's of the same round come, so the clock tells."""
        if recs and not first:
            first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] > 8.0

    try:
        _kill_when(out, 1, neighbours_finished, proc)
        assert proc.wait(timeout=240) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    assert max(r["round"] for r in recs if r["node"] != 1) == 300  # they finished first
    mine = [r["round"] for r in recs if r["node"] == 1]
    assert max(mine) < 300 and len(mine) == len(set(mine)), max(mine)
    assert not os.path.exists(os.path.join(out, "models", "node-1.pt"))


def test_a_killed_coordinator_resumes_from_its_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    proc = _cluster(out, "--mode", "fedavg", "--nodes", "4", "--rounds", "40")
    try:
        _kill_when(out, "coordinator",
                   lambda recs: sum(r["role"] == "coordinator" for r in recs) >= 15, proc)
        assert proc.wait(timeout=240) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    assert os.path.exists(os.path.join(out, "checkpoint.msgpack"))
    rounds = sorted(r["round"] for r in recs if r["role"] == "coordinator")
    assert rounds == list(range(1, 41))  # none lost, none repeated
    per_worker = Counter((r["node"], r["round"]) for r in recs if r["role"] == "worker")
    assert max(per_worker.values()) == 1
    assert s["accuracy_mean"] > 0.93
    assert s["bytes_sent_total"] == s["bytes_up_total"] + s["bytes_down_total"]


def _worker_restarted(out, mode: str, rounds: int, round_timeout: int, after: int) -> tuple:
    """A server run of 3 workers whose worker 1 is killed once the coordinator recorded
    ``after`` rounds, and restarted: the run's summary and records."""
    proc = _cluster(out, "--mode", mode, "--nodes", "3", "--rounds", str(rounds),
                    "--round-timeout", str(round_timeout))
    try:
        _kill_when(out, 1, lambda recs: sum(r["role"] == "coordinator" for r in recs) >= after,
                   proc)
        assert proc.wait(timeout=240) == 0
    finally:
        proc.kill()
    s = _summary(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    return s, _records(out)


def test_stc_workers_end_with_the_servers_model_after_a_worker_restart(tmp_path):
    """A restarted STC worker holds W_0, while the server believed it held its last
    catch-up: it kept adding later updates to the wrong model.  Now it says it is
    behind and is caught up, and every worker's final model is the server's.  (The rounds
    go on without it once a round time-out passed: on a loaded machine 40 rounds ended
    before its restart did, and it got no final model; 80 now.)"""
    s, recs = _worker_restarted(str(tmp_path / "run"), "stc", 80, 5, 10)
    final = {r["node"]: r["accuracy"] for r in recs if r.get("final")}
    assert len(final) == 3
    assert set(final.values()) == {s["global_accuracy_per_round"][-1][1]}


def test_a_restarted_worker_does_not_cost_the_round_its_time_out(tmp_path):
    """A worker restarted mid-round is sent the round's instruction again: its old
    process got it, the new one waited for the next round's, and the coordinator waited
    the round's whole time-out for its reply (30.1 s here)."""
    _, recs = _worker_restarted(str(tmp_path / "run"), "fedavg", 30, 30, 5)
    walls = [r["wall_s"] for r in sorted((r for r in recs if r["role"] == "coordinator"),
                                         key=lambda r: r["round"])]
    assert max(b - a for a, b in zip(walls, walls[1:])) < 20.0  # a restart, not 30 s
    assert len({r["node"] for r in recs if r.get("final")}) == 3


@pytest.mark.parametrize("flags, words", [
    (["--restart", "sometimes"], "--restart expects"),
    (["--restart", "on-failure:0"], "--restart expects"),
    (["--restart", "on-failure", "--in-process"], "--in-process")])
def test_bad_restart_policies_exit_2(tmp_path, flags, words):
    proc = cli_here("cluster", "--topology", "ring:4", "--out", str(tmp_path / "o"), *flags)
    assert proc.returncode == 2 and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_remote_node_restarted_by_hand_rejoins(tmp_path):
    """Multi-host: a node started with `p2pfl node --connect` dies; started again with
    the same id, it rejoins the running cluster and catches up."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = str(tmp_path / "run")
    log = open(tmp_path / "launcher.log", "w")  # not -q: what it says of the node
    launcher = Forked([*CLI, "cluster", "--dataset",
                       "digits", "--restart", "on-failure", "--out", out,
                       "--topology", "ring:4", "--rounds", "400", "--round-timeout",
                       "1", "--eval-every", "50", "--no-consensus", "--listen", addr],
                      cwd=ROOT, stderr=log)

    def node(i):
        return _remote_node(addr, i)

    nodes, spare = [node(i) for i in range(4)], spare_node(addr, 2)
    try:
        _kill_when(out, 2, lambda recs: len(recs) >= 4 * 40, launcher)
        nodes[2].wait(timeout=10)
        deadline = time.monotonic() + 60  # the launcher says so (it said nothing before)
        while "node 2 lost its connection; it fails in " not in (tmp_path /
                                                                 "launcher.log").read_text():
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.1)
        nodes[2] = release(spare)  # started again by hand
        assert launcher.wait(timeout=240) == 0
    finally:
        for p in [launcher, *nodes, spare]:
            p.kill()
        log.close()
    _assert_rejoined_once(out, 2, 400)
    said = (tmp_path / "launcher.log").read_text()
    assert "node 2 was started again on " in said and "(restart 1/3)" in said, said


def test_a_node_started_again_while_it_runs_replaces_its_old_process(tmp_path):
    """A node restarted by hand while its old process still ran (a hung host, say): the
    old process went on sending as that node, unseen by the launcher.  Now it is told
    to stop, and says so, and the new one takes its place."""
    from p2pfl.addresses import free_port

    addr = f"tcp://127.0.0.1:{free_port()}"
    out = str(tmp_path / "run")
    launcher = _cluster(out, "--topology", "ring:3", "--rounds", "800", "--round-timeout", "1",
                        "--eval-every", "400", "--no-consensus", "--listen", addr)

    def node(i):
        return _remote_node(addr, i, text=True, stderr=subprocess.PIPE)

    nodes, spare = [node(i) for i in range(3)], spare_node(addr, 2, text=True,
                                                           stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while sum(r["node"] == 2 for r in _records(out)) < 40:
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        old, nodes[2] = nodes[2], release(spare)  # the old one still runs
        assert old.wait(timeout=30) == 2, (old.stderr.read(), len(_records(out)))
        assert old.stderr.read().strip() == ("p2pfl: error: node 2: the launcher refused this "
                                             "node: node 2 was started again elsewhere; this "
                                             "process is replaced")
        assert launcher.wait(timeout=240) == 0
        assert [p.wait(timeout=30) for p in nodes] == [0, 0, 0]
    finally:
        for p in [launcher, *nodes, spare]:
            p.kill()
    _assert_rejoined_once(out, 2, 800)


def test_a_dead_coordinator_without_restart_is_exit_1(tmp_path):
    """Without the coordinator no round completes: the run ends, and says it failed, at
    once (the workers were stopped only after the closer's 10 s grace)."""
    out = str(tmp_path / "run")
    proc = Forked([*CLI, "cluster", "--dataset", "digits",
                   "--mode", "fedavg", "--nodes", "3", "--rounds", "500",
                   "--round-timeout", "1", "-q", "--out", out], cwd=ROOT,
                  stderr=subprocess.PIPE, text=True)
    try:
        _kill_when(out, "coordinator",
                   lambda recs: sum(r["role"] == "coordinator" for r in recs) >= 3, proc)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=180)
        took = time.monotonic() - killed
    finally:
        proc.kill()
    assert proc.returncode == 1 and took < 6, took
    assert err.strip().splitlines()[-1].startswith(
        "p2pfl: error: the coordinator failed; the run did not finish its rounds (")
    assert "coordinator" in _summary(out)["failed_nodes"]


def test_a_restarted_node_does_not_run_an_unguarded_script_again(tmp_path):
    """A replacement process is spawned, and spawning imported the parent's __main__:
    a script without an `if __name__ == "__main__"` guard ran again, top to bottom,
    inside the restarted node (a whole second cluster)."""
    out = tmp_path / "run"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import json, os, signal, threading, time\n"
        "import networkx as nx, p2pfl\n"
        "print('TOP', os.getpid(), flush=True)\n"
        f"OUT = {str(out)!r}\n"
        "def killer():\n"
        "    while True:\n"
        "        time.sleep(0.1)\n"
        "        try:\n"
        "            pid = json.load(open(OUT + '/nodes.json'))[0]['pid']\n"
        "            if pid and os.path.getsize(OUT + '/metrics.jsonl'):\n"
        "                os.kill(pid, signal.SIGKILL)\n"
        "                return\n"
        "        except (OSError, ValueError, KeyError, IndexError):\n"
        "            pass\n"
        "threading.Thread(target=killer, daemon=True).start()\n"
        "res = p2pfl.run_cluster(nx.cycle_graph(3), rounds=40, restart='on-failure:1', out=OUT,"
        " quiet=True, round_timeout=5, local_steps=30)\n"
        "print('RESTARTS', res.summary['restarts'], flush=True)\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("TOP") == 1, proc.stdout
    assert "RESTARTS 1" in proc.stdout, proc.stdout


def test_neighbours_do_not_wait_a_round_time_out_for_a_restarted_node(tmp_path):
    """A restarted node asks to be caught up (a pull) and sends nothing before an
    answer, which its neighbours give with their next round's messages: they waited a
    whole round time-out (30 s here) for its model first.  A restart under load (a fresh
    process importing torch, four test workers on two cores) took more than 6 s."""
    out = str(tmp_path / "run")
    proc = _cluster(out, "--topology", "ring:3", "--rounds", "2000", "--eval-every", "500",
                    "--local-steps", "1", "--round-timeout", "30")
    try:
        _kill_when(out, 1, lambda recs: len(recs) >= 3 * 200, proc)
        assert proc.wait(timeout=240) == 0
    finally:
        proc.kill()
    recs = _records(out)
    assert _summary(out)["restarts"] == 1
    for node in (0, 2):
        walls = sorted(r["wall_s"] for r in recs if r["node"] == node)
        assert max(b - a for a, b in zip(walls, walls[1:])) < 15.0  # a restart, not 30 s


def _kill_spawned_child(parent: int, timeout=60) -> None:
    """SIGKILL the first process started for a restart under ``parent`` (a child of its
    fork server, before it has joined); the nodes it forked at the start, the fork
    server and multiprocessing's tracker are left alone."""
    def stat(pid: str) -> tuple[int, bytes]:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return ppid, fh.read()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                procs[int(pid)] = stat(pid)
            except (OSError, ValueError, IndexError):
                continue
        servers = {pid for pid, (ppid, cmd) in procs.items()
                   if ppid == parent and b"forkserver" in cmd}
        for pid, (ppid, _) in procs.items():
            if ppid in servers:
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.005)
    raise AssertionError("no restarted process appeared")


def test_a_restarted_process_that_dies_before_it_joins_is_restarted_again(tmp_path):
    """The launcher acted on the exits of running nodes only: a restarted process
    that died before it joined left its node restarting, and the run waiting, for ever."""
    out = str(tmp_path / "run")
    proc = _cluster(out, "--topology", "ring:3", "--rounds", "300", "--round-timeout", "2",
                    "--eval-every", "100", "--local-steps", "1", "--restart", "on-failure:2")
    try:
        _kill_when(out, 2, lambda recs: len(recs) >= 3 * 30, proc)
        _kill_spawned_child(proc.pid)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 2 and s["failed_nodes"] == {}
    assert max(r["round"] for r in recs if r["node"] != 2) == 300
    mine = [r["round"] for r in recs if r["node"] == 2]  # to 300, or (its neighbours done
    assert len(mine) == len(set(mine))  # before its second restart came) ended at once


def _final_checkpoint(out) -> bool:
    """Whether the coordinator's checkpoint holds its last round's record."""
    try:
        with open(os.path.join(out, "checkpoint.msgpack"), "rb") as fh:
            return b"final_record" in fh.read()
    except OSError:
        return False


def test_a_coordinator_killed_while_handing_out_final_models_hands_out_the_same(tmp_path):
    """It used to resume from the round before and run the last round again: without the
    workers that already had their final model and had left (a round time-out), and
    handing the others a model that no record holds."""
    out = str(tmp_path / "run")
    proc = _cluster(out, "--mode", "fedavg", "--nodes", "4", "--rounds", "2",
                    "--link", "up_mbps=0.2", "--round-timeout", "8")  # ~0.8 s a final model
    try:
        deadline = time.monotonic() + 90
        while not _final_checkpoint(out):  # written just before the final models leave
            assert proc.poll() is None and time.monotonic() < deadline, "run ended too early"
            time.sleep(0.02)
        time.sleep(1.2)  # one or two final models have left the slow uplink, not all four
        _kill_when(out, "coordinator", lambda recs: True, proc)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {} and s["misses_total"] == 0
    assert sorted(r["round"] for r in recs if r["role"] == "coordinator") == [1, 2]
    final = dict(s["global_accuracy_per_round"])[2]
    assert set(s["final_accuracy_by_worker"].values()) == {final}


def test_a_restarted_coordinator_hears_that_a_worker_is_offline(tmp_path):
    """The worker had told the coordinator that died; the new one waited for it every
    round (29 misses in 30 rounds) until the worker re-announced itself on the move."""
    trace = tmp_path / "avail.csv"
    trace.write_text("node,offline_start_s,offline_end_s\n0,0.5,1000\n")
    out = str(tmp_path / "run")
    proc = _cluster(out, "--mode", "fedavg", "--nodes", "4", "--rounds", "30",
                    "--link", "latency_ms=100", "--round-timeout", "2",
                    "--availability", str(trace))
    try:
        _kill_when(out, "coordinator", lambda recs: any(
            r["role"] == "coordinator" and r["participants"] == 3 for r in recs), proc)
        assert proc.wait(timeout=180) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    assert s["misses_total"] == 0
    last = max((r for r in recs if r["role"] == "coordinator"), key=lambda r: r["round"])
    assert last["round"] == 30 and last["participants"] == 3


def test_remote_nodes_whose_launcher_went_silent_exit_non_zero(tmp_path):
    """The liveness check ran only inside a wait of a second or more, which rounds that
    keep moving never have: the nodes trained on without a launcher, then exited 0.  A
    stopped launcher (SIGSTOP) keeps its connections up (its kernel answers): its nodes
    give up after ``--lost-after`` of silence (a killed one's: ``test_faults.py``)."""
    from tests._remote import await_records, remote_cluster

    out = tmp_path / "run"
    # --lost-after: longer than the launcher's heartbeats (every 2 s), which load delays
    with remote_cluster(out, 2, "--topology", "ring:2", "--rounds", "100000",
                        "--start-timeout", "30",  # the nodes' imports, on a loaded machine
                        node_flags=("--start-timeout", "3", "--lost-after", "5")) as (
            launcher, _, nodes):
        await_records(out, 2 * 20, launcher)
        launcher.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        errors = [p.communicate(timeout=60)[1] for p in nodes]
        took = time.monotonic() - stopped
    assert [p.returncode for p in nodes] == [1, 1]
    assert all("no word from the launcher for 5 s" in e for e in errors), errors
    assert took < 12  # lost after 5 s of silence (--lost-after; by default 4 × 3 s)


def test_a_node_restarted_by_hand_counts_against_the_restart_limit(tmp_path):
    """`--restart on-failure:1` took a second restart by hand, and summary.json said 2."""
    from p2pfl.addresses import free_port

    addr = f"tcp://127.0.0.1:{free_port()}"
    out = str(tmp_path / "run")
    launcher = _cluster(out, "--topology", "ring:3", "--rounds", "400", "--round-timeout", "1",
                        "--eval-every", "50", "--no-consensus", "--listen", addr,
                        "--restart", "on-failure:1", "--start-timeout", "30")

    def node(i):
        return _remote_node(addr, i, "--start-timeout", "30", stderr=subprocess.DEVNULL)

    def spare():
        return spare_node(addr, 2, "--start-timeout", "30", stderr=subprocess.DEVNULL)

    nodes, spares = [node(i) for i in range(3)], [spare(), spare()]
    try:
        for kills in (1, 2):
            _kill_when(out, 2, lambda recs: sum(r["node"] == 2 for r in recs) >= 40 * kills,
                       launcher)
            nodes[2].wait(timeout=10)
            nodes[2] = release(spares[kills - 1])  # started again by hand
        assert nodes[2].wait(timeout=60) == 2  # the second is not taken: refused
        launcher.send_signal(signal.SIGINT)  # not waiting out node 2's lost connection
        assert launcher.wait(timeout=60) == 130
    finally:
        for p in [launcher, *nodes, *spares]:
            p.kill()
    s = _summary(out)
    assert s["interrupted"] and s["restarts"] == 1


def test_a_restarted_process_that_never_joins_fails_after_the_start_time_out(
        tmp_path, monkeypatch):
    """A new process that never joins (Ray could not place it once a host was lost) left
    its node `restarting`, and the run waiting, for ever (a helper's audit): it fails
    once a start time-out has passed."""
    import multiprocessing
    import threading

    import p2pfl
    from p2pfl import supervision

    def never_joins(h, *args):
        h.runner = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,),
                                                               daemon=True)
        h.runner.start()
        h.pid = h.runner.pid

    monkeypatch.setattr(supervision, "respawn", never_joins)
    out = tmp_path / "run"

    def kill_node_1():
        deadline = time.monotonic() + 60
        while len(_records(str(out))) < 3 * 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(out / "nodes.json") as fh:
            os.kill(next(n["pid"] for n in json.load(fh) if n["id"] == 1), signal.SIGKILL)

    threading.Thread(target=kill_node_1, daemon=True).start()
    started = time.monotonic()
    res = p2pfl.run_cluster("ring:3", dataset="digits", rounds=1500, restart="on-failure",
                            start_timeout=3, round_timeout=1, quiet=True, out=str(out),
                            eval_every=1000)
    assert res.summary["failed_nodes"] == {"1": "its restarted process did not join in 3 s"}
    assert time.monotonic() - started < 60
