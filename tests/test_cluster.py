"""Real clusters: multi-process and in-process runs, byte accounting, shutdown without orphans."""

import json
import os
import signal
import subprocess
import time

import networkx as nx
import numpy as np
import pytest

import p2pfl
from p2pfl.metrics import read_metrics
from tests._forked import CLI, Forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_multiprocess_cluster_learns_and_bytes_add_up(tmp_path):
    res = p2pfl.run_cluster("ring:4", rounds=4, local_steps=10, quiet=True, out=str(tmp_path))
    s = res.summary
    for key in ("mode", "nodes", "rounds", "accuracy_mean", "accuracy_min", "bytes_sent_total",
                "bytes_received_total", "wall_s"):
        assert key in s
    assert s["nodes"] == 4 and s["failed_nodes"] == {}
    assert s["accuracy_mean"] > 0.5  # 4 rounds of 10 steps on digits
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 16 and records == res.metrics
    for key in ("round", "node", "label", "loss", "accuracy", "bytes_sent", "bytes_received",
                "wall_s", "process_cpu_s", "consensus_distance"):
        assert key in records[0]
    for node in range(4):  # each node's process CPU grows round by round (10 SGD steps each)
        cpu = [r["process_cpu_s"] for r in records if r["node"] == node]
        assert all(0 < a < b for a, b in zip(cpu, cpu[1:])), cpu
    # bytes: the records sum to the total, which equals what every node's sockets sent,
    # which equals what the neighbours received
    assert sum(r["bytes_sent"] for r in records) == s["bytes_sent_total"]
    assert s["bytes_sent_total"] == s["bytes_sent_counted_by_nodes"] == s["bytes_received_total"]
    # dense fp32: 4 bytes per parameter per neighbour, plus a small header
    per_message = s["bytes_sent_total"] / (4 * 2 * 4)
    assert 4 * s["num_params"] < per_message < 4 * s["num_params"] + 200
    nodes = json.loads((tmp_path / "nodes.json").read_text())
    assert [n["id"] for n in nodes] == [0, 1, 2, 3]
    assert all(n["pid"] and n["address"].startswith("tcp://127.0.0.1:") for n in nodes)
    assert not any(_alive(n["pid"]) for n in nodes)
    for name in ("summary.json", "config.json"):
        json.loads((tmp_path / name).read_text())


def test_in_process_cluster_with_string_labels(tmp_path):
    g = nx.Graph([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"), ("a", "c")])
    res = p2pfl.run_cluster(g, rounds=3, in_process=True, quiet=True, out=str(tmp_path),
                            eval_every=2)
    labels = {r["label"] for r in res.metrics}
    assert labels == {"a", "b", "c", "d"}
    evaluated = sorted({r["round"] for r in res.metrics if r["accuracy"] is not None})
    assert evaluated == [2, 3]
    assert res.summary["bytes_sent_total"] == res.summary["bytes_received_total"]


def test_ipc_transport(tmp_path):
    res = p2pfl.run_cluster("line:3", rounds=2, transport="ipc", quiet=True, out=str(tmp_path))
    assert res.summary["failed_nodes"] == {} and len(res.metrics) == 6


def test_gossip_averaging_reaches_consensus(tmp_path):
    res = p2pfl.run_cluster("complete:4", rounds=3, in_process=True, quiet=True,
                            out=str(tmp_path), lr=1e-6, local_steps=1, momentum=0.0)
    last = [r["consensus_distance"] for r in res.metrics if r["round"] == 3]
    # complete graph with MH weights averages exactly: models agree up to one tiny SGD step
    assert max(last) < 1e-3
    # summary.json's consensus_last is the last measured round's, from the same records
    c = json.loads((tmp_path / "summary.json").read_text())["consensus_last"]
    assert c["round"] == 3 and c["max"] == max(last)
    assert c["median"] == float(np.median(last)) and c["rel_max"] is not None


def _start_cli(tmp_path, *extra):
    """A run long enough (minutes) that a signal always lands while it works."""
    cmd = [*CLI, "cluster", "--topology", "ring:4", "--rounds", "5000", "--local-steps", "20",
           "--round-timeout", "1", "--out", str(tmp_path), "-q", *extra]
    return Forked(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _node_pids(tmp_path, proc, timeout=60.0):
    path = tmp_path / "nodes.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            pids = [n["pid"] for n in json.loads(path.read_text())]
            metrics = tmp_path / "metrics.jsonl"
            if metrics.exists() and metrics.stat().st_size:
                return pids
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("cluster did not start")


def test_killed_node_is_survived_and_reported(tmp_path):
    proc = _start_cli(tmp_path, "--rounds", "40", "--local-steps", "30")
    pids = _node_pids(tmp_path, proc)
    os.kill(pids[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "1" in summary["failed_nodes"]
    # the launcher tells the neighbours that it died: each misses it once at most
    assert summary["misses_total"] <= 2
    recs = read_metrics(tmp_path / "metrics.jsonl")
    rounds = {r["node"]: r["round"] for r in recs}
    assert rounds[0] == rounds[2] == rounds[3] == 40
    # both totals count the dead node's recorded rounds (its counters died with it)
    for key in ("bytes_sent", "bytes_received"):
        assert summary[f"{key}_total"] >= sum(r[key] for r in recs) > 0
    assert any(r["node"] == 1 and r["bytes_received"] for r in recs)
    assert _wait_gone(pids)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_no_node_outlives_the_launcher(tmp_path, sig):
    (tmp_path / "summary.json").write_text('{"rounds": 20, "from": "an earlier run"}')
    proc = _start_cli(tmp_path)
    pids = _node_pids(tmp_path, proc)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"launcher ignored signal {sig!r}; stderr: {err[-2000:]}")
    assert _wait_gone(pids), "node processes outlived the launcher"
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig  # 130 for Ctrl-C, 143 for SIGTERM
        assert "Traceback" not in err
        states = {n["state"] for n in json.loads((tmp_path / "nodes.json").read_text())}
        assert states == {"stopped"}, states
        # the summary of what was done: none was written, and an earlier run's stayed
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["interrupted"] is True and summary["bytes_sent_total"] > 0
        # the stopped nodes' byes were collected: their counters are in it (they were
        # lost, and with them every total that only the counters give)
        assert summary["node_processes"] == 4 and summary["messages_sent_total"] > 0
        assert summary["bytes_sent_total"] == summary["bytes_sent_counted_by_nodes"]
        assert summary["bytes_received_total"] > 0 and summary["wire_bytes_total"] > 0
    else:
        assert not (tmp_path / "summary.json").exists()  # the stale one is gone


def test_remote_nodes_join_a_listening_launcher(tmp_path):
    """The multi-host path: nodes started by hand with `p2pfl node --connect`."""
    from tests._remote import remote_run

    summary, _ = remote_run(tmp_path)
    assert summary["failed_nodes"] == {} and summary["bytes_sent_total"] > 0


def test_a_quiet_launcher_on_any_port_says_where_nodes_join(tmp_path):
    """--listen tcp://HOST:* with -q: the port is chosen at bind time, and a script
    needs it to start `p2pfl node --connect`, so that one line shows on stderr (before,
    -q hid it, and config.json records the * asked for)."""
    from tests._remote import ROOT as root

    out = tmp_path / "run"
    cli = CLI
    launcher = Forked([*cli, "cluster", "--topology", "ring:2", "--rounds", "2",
                       "--listen", "tcp://127.0.0.1:*", "-q", "--out", str(out),
                       "--start-timeout", "30"],  # bounds a readline never answered
                      cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nodes = []
    try:
        line = launcher.stderr.readline()  # blocks until the launcher has bound
        assert line.startswith("waiting for 2 node(s) to join at tcp://127.0.0.1:"), line
        address = line.split(" at ", 1)[1].strip()
        assert not address.endswith(":*")
        nodes = [Forked([*cli, "node", "--connect", address, "--host", "127.0.0.1",
                         "--id", str(i)], cwd=root) for i in range(2)]
        stdout, err = launcher.communicate(timeout=120)
        assert launcher.returncode == 0, err
        assert (stdout, err) == (f"{out}\n", "")  # nothing else: it is quiet
        assert [p.wait(timeout=60) for p in nodes] == [0, 0]
    finally:
        for p in [launcher, *nodes]:
            p.kill()
            p.wait()
    assert json.loads((out / "summary.json").read_text())["failed_nodes"] == {}


def test_nodes_with_codecs_of_their_own_share_one_gamma(tmp_path):
    """The consensus step x_i += γ Σ_j w_ij (x̂_j − x̂_i) keeps the network's average
    only with one γ: each CHOCO node took its own codec's (1.0 for fp16, 0.2 for
    stc:0.1, 0.1 for topk:0.05), and the average drifted.  Now the smallest, unless
    --gamma gives it."""
    prof = tmp_path / "codecs.toml"
    prof.write_text('[nodes.0]\ncompression = "fp16"\n[nodes.2]\ncompression = "stc:0.1"\n')
    p = p2pfl.plan_cluster("ring:4", algorithm="choco", compression="topk:0.05",
                           profiles=str(prof))
    assert [s.options.gamma for s in p.specs] == [0.1] * 4
    p = p2pfl.plan_cluster("ring:4", algorithm="choco", compression="topk:0.05",
                           profiles=str(prof), gamma=0.3)
    assert [s.options.gamma for s in p.specs] == [0.3] * 4


@pytest.mark.parametrize("other", ["quant:0.001+cabac", "none"])
def test_compressed_gossip_with_per_node_codecs(tmp_path, other):
    """Node 0 has a codec of its own; ``none`` is not in the run's codec table, and its
    peers took it for a stranger's codec (a review of the table check)."""
    prof = tmp_path / "codecs.toml"
    prof.write_text('[default]\ncompression = "stc:0.1+golomb"\n'
                    f'[nodes.0]\ncompression = "{other}"\n')
    res = p2pfl.run_cluster("ring:4", rounds=4, in_process=True, quiet=True,
                            out=str(tmp_path / "run"), profiles=str(prof))
    s = res.summary
    assert s["algorithm"] == "choco" and s["dropped_total"] == 0 and s["misses_total"] == 0
    assert s["compression_ratio"] > 3  # stc at 10 % on 3 of 4 nodes
    assert s["accuracy_mean"] > 0.3


def test_any_torch_module_through_the_api(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 10))
    res = p2pfl.run_cluster("ring:3", model=model, rounds=3, local_steps=10,
                            quiet=True, out=str(tmp_path))  # forked node processes
    assert res.summary["num_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert res.summary["accuracy_mean"] > 0.5
    res = p2pfl.run_cluster("ring:3", model=model, rounds=2, in_process=True, quiet=True,
                            out=str(tmp_path / "threads"))
    assert res.summary["failed_nodes"] == {}


def _node(addr, i, *flags):
    from tests._remote import ROOT as root

    return Forked([*CLI, "node", "--connect", addr,
                   "--id", str(i), "--host", "127.0.0.1", *flags], cwd=root,
                  stderr=subprocess.PIPE, text=True)


def test_remote_nodes_that_joined_first_wait_for_a_late_one(tmp_path):
    """Nodes 0-2 join with --start-timeout 4, node 3 only 8 s later: their time-outs
    counted from their joins, they gave up, and the first error failed the whole run
    while the launcher still waited (a helper's audit).  The launcher's heartbeats to
    joined nodes now keep them waiting; the time-out counts from its last word."""
    from tests._remote import listening_launcher

    launcher, addr = listening_launcher(tmp_path / "run", "--topology", "ring:4", "--rounds",
                                        "2", "--start-timeout", "60")
    nodes = [_node(addr, i, "--start-timeout", "4") for i in range(3)]
    try:
        time.sleep(8)
        assert [p.poll() for p in nodes] == [None] * 3 and launcher.poll() is None
        nodes.append(_node(addr, 3, "--start-timeout", "4"))
        assert launcher.wait(timeout=120) == 0
        assert [p.wait(timeout=30) for p in nodes] == [0] * 4
    finally:
        for p in [launcher, *nodes]:
            p.kill()


def test_a_remote_node_that_gave_up_before_the_start_is_waited_for_again(tmp_path):
    """Node 1 advertises a control address nobody listens on: the launcher cannot reach
    it, and it gives up at its start time-out.  Its error failed the run; the launcher
    now says so and waits for it to join again, as for a process that died then."""
    from tests._remote import listening_launcher

    launcher, addr = listening_launcher(tmp_path / "run", "--topology", "ring:3", "--rounds",
                                        "2", "--start-timeout", "60", quiet=False)
    nodes = [_node(addr, 0), _node(addr, 2),
             _node(addr, 1, "--start-timeout", "3", "--advertise", "127.0.0.9")]
    try:
        assert nodes[2].wait(timeout=60) == 1  # it gave up
        assert launcher.poll() is None  # and the run did not fail
        nodes.append(_node(addr, 1))
        _, err = launcher.communicate(timeout=120)
        assert launcher.returncode == 0, err
        assert "node 1 gave up before the start (" in err, err
        assert [p.wait(timeout=30) for p in nodes[:2] + nodes[3:]] == [0] * 3
    finally:
        for p in [launcher, *nodes]:
            p.kill()


def test_a_start_that_fails_before_any_join_leaves_no_earlier_node_table(tmp_path):
    """nodes.json is written once a node joins: a start that failed before left the
    earlier run's table (its nodes `done`, its pids) beside the new config.json."""
    from p2pfl.addresses import free_port
    from tests._inproc import cli_here

    (tmp_path / "nodes.json").write_text('[{"id": 0, "state": "done", "pid": 1}]')
    res = cli_here("cluster", "--topology", "ring:2", "--rounds", "1", "--listen",
                   f"tcp://127.0.0.1:{free_port()}", "--start-timeout", "1", "-q",
                   "--out", str(tmp_path))
    assert res.returncode == 1 and "not joined after 1 s" in res.stderr, res.stderr
    assert (tmp_path / "config.json").exists() and not (tmp_path / "nodes.json").exists()


def test_a_listening_server_run_says_which_id_its_coordinator_is(tmp_path):
    """It waited for node 'coordinator' without saying that it is `--id N` (N workers)."""
    from tests._remote import listening_launcher, read_until

    launcher, _ = listening_launcher(tmp_path / "run", "--mode", "fedavg", "--nodes", "3",
                                     "--start-timeout", "30", quiet=False)
    try:
        said = read_until(launcher, "node(s) to join at")
        assert said.rstrip().endswith("(the coordinator is --id 3)"), said
    finally:
        launcher.kill()
