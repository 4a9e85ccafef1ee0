"""The Python API as a notebook or a sweep script uses it: graph objects, a torch module
of the user's, numpy and pathlib values, repeated runs, SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import networkx as nx
import numpy as np
import pytest
import torch.nn as nn

import p2pfl
from p2pfl.errors import ConfigError, UsageError
from p2pfl.models import CUSTOM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(rounds=2, quiet=True, in_process=True, transport="inproc", dataset="digits")


def _linear(classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))


class _Unflattened(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("model, words", [
    (_linear(5), r"maps a batch of \(2, 1, 8, 8\) to \(2, 5\); expected \(2, 10\)"),
    (_Unflattened(), "fails on a batch of"),
    (nn.Sequential(nn.Flatten()), "maps a batch"),
    (nn.Linear, "a torch.nn.Module instance, got type"),
])
def test_a_module_that_cannot_classify_the_data_is_refused_before_any_node(tmp_path, model,
                                                                           words):
    """Each failed in every node; run_cluster returned normally with no accuracy."""
    with pytest.raises(ConfigError, match=words):
        p2pfl.run_cluster(nx.cycle_graph(3), model=model, out=str(tmp_path), **FAST)
    assert not (tmp_path / "metrics.jsonl").exists() and not CUSTOM


@pytest.mark.parametrize("options, where", [
    (dict(backend="ray"), "Ray actors"),
    (dict(restart="on-failure"), "restarted nodes"),
])
def test_a_module_is_refused_where_it_cannot_be_rebuilt(tmp_path, options, where):
    """A Ray actor or a restarted (spawned) node has no copy of the module: it failed
    with 'unknown model custom:0' after the run had started."""
    with pytest.raises(ConfigError, match=where):
        p2pfl.run_cluster(nx.cycle_graph(3), model=_linear(), out=str(tmp_path), rounds=1,
                          quiet=True, **options)


def test_graph_objects_numpy_and_paths_and_what_the_run_records(tmp_path):
    """A graph object was recorded as the default ring:8; Path and numpy values were
    refused; the registered module stayed in memory after the run."""
    res = p2pfl.run_cluster(nx.cycle_graph(4), model=_linear(), out=tmp_path / "run",
                            **dict(FAST, rounds=np.int64(2), lr=np.float32(0.1)))
    assert res.summary["topology"] == "networkx Graph (4 nodes)"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["topology"] == "networkx Graph (4 nodes)"
    assert config["resolved"]["graph_edges"] == [[0, 1], [0, 3], [1, 2], [2, 3]]
    assert config["rounds"] == 2 and not CUSTOM
    res = p2pfl.run_cluster(nx.cycle_graph(3), model=None, out=str(tmp_path / "default"),
                            **FAST)  # None: the default, as for any option
    assert res.summary["accuracy_mean"] is not None
    with pytest.raises(UsageError, match="give one of them"):
        p2pfl.run_cluster(nx.path_graph(3), topology="ring:4", **FAST)
    with pytest.raises(UsageError, match="give one of them"):
        p2pfl.run_cluster("ring:3", topology="ring:4", **FAST)
    with pytest.raises(p2pfl.TopologyError):  # the package's own names (it had none)
        p2pfl.run_cluster("ring:1", **FAST)


def test_runs_without_out_get_a_folder_each(tmp_path, monkeypatch):
    """Two runs in one second wrote to one folder, the second over the first."""
    monkeypatch.chdir(tmp_path)
    a = p2pfl.run_cluster("ring:3", **FAST)
    b = p2pfl.run_cluster("ring:4", **FAST)
    assert a.out_dir != b.out_dir
    assert json.loads(pathlib.Path(a.out_dir, "summary.json").read_text())["nodes"] == 3


class _DiesInTraining(nn.Module):
    """Passes the plan's probe, then fails on a node's third forward pass."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("broken on purpose")
        return self.fc(x.flatten(1))


def test_a_run_where_every_node_failed_raises(tmp_path):
    """It returned a Result with accuracy None and, with quiet=True, said nothing."""
    with pytest.raises(p2pfl.ClusterError, match="every node failed .*broken on purpose") as info:
        p2pfl.run_cluster(nx.cycle_graph(3), model=_DiesInTraining(), out=str(tmp_path),
                          **FAST)
    assert info.value.result.summary["accuracy_mean"] is None
    assert (tmp_path / "summary.json").exists()


class _DiesWhenTrained(_DiesInTraining):
    """Fails in training mode only: a coordinator, which only evaluates, lives on."""

    def forward(self, x):
        if not self.training:
            return self.fc(x.flatten(1))
        return super().forward(x)


def test_a_server_run_where_every_worker_failed_raises(tmp_path):
    """The summary's `nodes` counts the workers, `failed_nodes` the coordinator too: a run
    whose workers all failed returned normally when its coordinator failed as well (5
    failed against 4 nodes), and said "every node failed" of a coordinator that
    finished."""
    with pytest.raises(p2pfl.ClusterError, match="every worker failed .*broken on "
                                                 "purpose") as info:
        p2pfl.run_cluster(None, mode="fedavg", nodes=3, model=_DiesWhenTrained(),
                          out=str(tmp_path), **FAST)
    assert set(info.value.result.summary["failed_nodes"]) == {"0", "1", "2"}


class _ExitsInANode(nn.Module):
    """Ends its process as a node's copy of it is made (unpickled, in a node process)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def __setstate__(self, state):
        super().__setstate__(state)
        if os.getpid() != int(os.environ["P2PFL_TEST_LAUNCHER"]):
            os._exit(3)


def test_a_node_that_exits_during_start_up_is_failed_in_nodes_json(tmp_path, monkeypatch):
    """The start failed with "node 0 exited during start-up", and nodes.json said that
    node was `stopped`, as if the launcher had stopped it (a helper's audit)."""
    monkeypatch.setenv("P2PFL_TEST_LAUNCHER", str(os.getpid()))
    with pytest.raises(p2pfl.ClusterError, match="exited during start-up"):
        p2pfl.run_cluster("ring:3", model=_ExitsInANode(), rounds=2, quiet=True,
                          dataset="digits", out=str(tmp_path))
    states = [n["state"] for n in json.loads((tmp_path / "nodes.json").read_text())]
    assert "failed" in states, states


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_lost_in_a_destructor_is_raised_again():
    """Python raises a handler's exception where the main thread is; inside a destructor
    (a ZeroMQ frame freed while the launcher polls) it was printed and lost, and the
    run went on: 4 of 40 Ctrl-Cs to an inproc cluster did nothing
    (``bash benchmarks/sigint.sh``)."""
    from p2pfl import signals
    from p2pfl.errors import Terminated

    class FreedDuringTheSignal:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the handler runs here, where nothing can raise
                pass

    old = signal.signal(signal.SIGTERM, signals.handler)
    try:
        FreedDuringTheSignal()  # unraisable: "Exception ignored in ..."
        with pytest.raises(Terminated):
            signals.check()  # what the launcher's loops call
        signals.clear()
        signals.check()  # nothing pending
    finally:
        signal.signal(signal.SIGTERM, old)
        signals.clear()


def test_a_signal_does_not_cut_a_message_in_two():
    """A signal landing between the parts of a message queued its first parts alone:
    ZeroMQ then appended the next message's parts to them, and the receiver dropped
    both as malformed (a `p2pfl node`'s last records and its bye, after a Ctrl-C).
    ``signals.uncut`` raises the signal once the message is queued whole; one that
    arrives while an earlier signal unwinds the process is not raised again."""
    import threading

    import zmq

    from p2pfl import signals
    from p2pfl.errors import Terminated

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, 5000)  # a message cut in two never arrives
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")

    def two_parts(signalled: bool) -> str:
        push.send(b"head", zmq.SNDMORE)
        if signalled:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the handler runs here
                pass
        push.send(b"tail")
        return "queued"

    old = signal.signal(signal.SIGTERM, signals.handler)
    try:
        with pytest.raises(Terminated):
            signals.uncut(two_parts, True)
        assert pull.recv_multipart() == [b"head", b"tail"]
        assert signals.uncut(two_parts, True) == "queued"  # unwinding already: not raised
        assert pull.recv_multipart() == [b"head", b"tail"]
        signals.clear()
        got = []
        thread = threading.Thread(target=lambda: got.append(signals.uncut(two_parts, False)))
        thread.start()
        thread.join()
        assert got == ["queued"] and pull.recv_multipart() == [b"head", b"tail"]
    finally:
        signal.signal(signal.SIGTERM, old)
        signals.clear()
        ctx.destroy(linger=0)


def test_a_signal_does_not_lose_the_records_being_sent():
    """A SIGTERM between taking a node's held records and sending them lost them, while
    its bye counted their bytes as recorded: ``bytes_sent_total`` fell one round short
    of ``bytes_sent_counted_by_nodes`` (a full-suite run of the remote SIGTERM test)."""
    from p2pfl import signals
    from p2pfl.errors import Terminated
    from p2pfl.runtime import Runtime

    rt = object.__new__(Runtime)  # its record-keeping alone
    rt._held, rt._flushed, sent = [{"round": 7}], 0.0, []

    def sink(held, vector):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10000):  # the handler runs here
            pass
        sent.extend(held)

    rt.sink = sink
    old = signal.signal(signal.SIGTERM, signals.handler)
    try:
        with pytest.raises(Terminated):
            rt.flush()
        assert sent == [{"round": 7}] and rt._held == []
    finally:
        signal.signal(signal.SIGTERM, old)
        signals.clear()


def test_a_sigterm_turned_into_a_plain_keyboard_interrupt_stays_a_sigterm():
    """Ray catches a signal's exception raised during its calls and raises a plain
    KeyboardInterrupt instead: a SIGTERM to a Ray run exited 130, as a Ctrl-C."""
    from p2pfl import signals
    from p2pfl.api import _signals_unwind
    from p2pfl.errors import Terminated

    with pytest.raises(KeyboardInterrupt) as info:  # not pytest's own Ctrl-C if it fails
        with _signals_unwind() as watched:
            assert watched  # the main thread, with Python's own handlers
            signals._pending.append(signal.SIGTERM)  # what the handler records
            raise KeyboardInterrupt()  # what Ray raises in place of our Terminated
    assert isinstance(info.value, Terminated) and info.value.signum == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt) as info:  # a Ctrl-C stays one
        with _signals_unwind():
            signals._pending.append(signal.SIGINT)
            raise KeyboardInterrupt()
    assert not isinstance(info.value, Terminated) and not signals._pending


def test_the_launcher_raises_a_signal_whose_exception_was_lost(tmp_path):
    """What the launcher's loops do with a signal recorded but not raised (as when its
    exception was lost in a destructor): the run unwinds as after Ctrl-C."""
    run = tmp_path / "run"
    script = tmp_path / "run.py"
    script.write_text(
        "import os, signal, threading, time\n"
        "import p2pfl\n"
        "from p2pfl import signals\n"
        "def lose():\n"
        f"    while not os.path.exists({str(run / 'metrics.jsonl')!r}):\n"
        "        time.sleep(0.1)\n"
        "    signals._pending.append(signal.SIGINT)  # recorded; its raise lost\n"
        "threading.Thread(target=lose, daemon=True).start()\n"
        "try:\n"
        "    p2pfl.run_cluster('ring:3', rounds=100000, quiet=True, eval_every=1000,"
        f" out={str(run)!r})\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "interrupted", out.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["interrupted"] is True


def test_sigterm_to_a_script_running_a_cluster_writes_its_summary(tmp_path):
    """Only the CLI turned SIGTERM into a clean stop: a script's run left no summary
    and nodes.json said 'joined'."""
    script = tmp_path / "run.py"
    script.write_text("import p2pfl\n"
                      f"p2pfl.run_cluster('ring:3', rounds=100000, quiet=True, eval_every=1000,"
                      f" out={str(tmp_path / 'run')!r})\n")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stderr=subprocess.PIPE)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] is True
    states = {n["state"] for n in json.loads((tmp_path / "run" / "nodes.json").read_text())}
    assert states == {"stopped"}


def test_on_round_sees_every_complete_round_once(tmp_path):
    """The caller's hook: each round once, in order, with every node's record (a copy:
    what the hook changes is not what metrics.jsonl holds)."""
    seen = []

    def hook(rnd, records):
        seen.append((rnd, sorted(r["node"] for r in records)))
        for r in records:
            r["accuracy"] = -1.0

    res = p2pfl.run_cluster("ring:3", rounds=4, quiet=True, out=str(tmp_path), on_round=hook)
    assert seen == [(r, [0, 1, 2]) for r in range(1, 5)]
    assert all(m["accuracy"] >= 0 for m in res.metrics)
    assert (res.summary["stop_requested_at_round"], res.summary["on_round_error"]) == (None, None)


def test_on_round_returning_true_stops_the_run(tmp_path):
    res = p2pfl.run_cluster("ring:3", rounds=500, quiet=True, out=str(tmp_path),
                            on_round=lambda rnd, records: rnd >= 3)
    s = res.summary
    assert s["stop_requested_at_round"] == 3 and s["target_reached_at_round"] is None
    assert s["failed_nodes"] == {} and s["misses_total"] == 0
    assert max(m["round"] for m in res.metrics) < 50  # stopped, not the 500 rounds


def test_on_round_raising_stops_the_run_and_is_raised_after_the_summary(tmp_path):
    calls = []

    def hook(rnd, records):
        calls.append(rnd)
        if rnd == 2:
            raise ValueError("my logger is down")

    with pytest.raises(ValueError, match="my logger is down"):
        p2pfl.run_cluster("ring:3", rounds=500, quiet=True, out=str(tmp_path), on_round=hook)
    assert calls == [1, 2]  # not called again once it raised
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["on_round_error"] == "ValueError: my logger is down"
    assert summary["failed_nodes"] == {} and summary["rounds"] == 500
    assert summary["accuracy_per_round"][-1][0] < 50


def test_on_round_that_is_not_a_function_is_refused_before_anything(tmp_path):
    with pytest.raises(UsageError, match="on_round must be a function of"):
        p2pfl.run_cluster("ring:3", rounds=1, out=str(tmp_path / "run"), on_round=3)
    assert not (tmp_path / "run").exists()


def test_on_round_answering_numpys_true_stops_the_run(tmp_path):
    """`return np.mean(accs) > x` is numpy's bool, not Python's True: it ran on."""
    res = p2pfl.run_cluster("ring:3", rounds=500, quiet=True, out=str(tmp_path),
                            on_round=lambda rnd, records: np.int64(rnd) >= 3)
    assert res.summary["stop_requested_at_round"] == 3
    assert max(m["round"] for m in res.metrics) < 50


def test_on_round_calling_sys_exit_still_leaves_a_summary(tmp_path):
    """SystemExit is not an Exception: it left the run without a summary.json."""
    def hook(rnd, records):
        if rnd == 2:
            sys.exit(3)

    with pytest.raises(SystemExit) as caught:
        p2pfl.run_cluster("ring:3", rounds=500, quiet=True, out=str(tmp_path), on_round=hook)
    assert caught.value.code == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["on_round_error"] == "SystemExit: 3" and summary["failed_nodes"] == {}


def test_a_signal_stops_the_run_while_on_round_runs(tmp_path):
    """The hook ran inside the launcher's handling of a message, where a signal waits
    for the handling to end: SIGTERM to a run whose hook sleeps 60 s took 60 s."""
    script = (
        "import time, p2pfl\n"
        "def hook(rnd, records):\n"
        "    if rnd == 2:\n"
        "        print('sleeping', flush=True)\n"
        "        time.sleep(60)\n"
        f"p2pfl.run_cluster('ring:2', rounds=500, quiet=True, out={str(tmp_path)!r}, "
        "on_round=hook)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "sleeping\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=45)
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0 and "Terminated" in err, err
    assert took < 30  # the shutdown's own waits, not the hook's minute
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True


def test_a_round_left_incomplete_at_the_end_is_not_handed_to_on_round(tmp_path):
    """Rounds that a failed node left incomplete are written when the run ends, and
    were handed to on_round then (after the run, a stop request to a finished launcher)."""
    from p2pfl.metrics import MetricsSink

    told = []
    sink = MetricsSink(str(tmp_path), [0, 1], on_round=lambda rnd, rows: told.append(rnd))
    sink.add({"round": 1, "node": 0, "accuracy": 0.5, "bytes_sent": 10})
    sink.add({"round": 1, "node": 1, "accuracy": 0.5, "bytes_sent": 10})
    sink.add({"round": 2, "node": 0, "accuracy": 0.6, "bytes_sent": 10})  # node 1 never does
    sink.close()
    assert told == [1] and sink.written == 3


def test_nodes_json_says_ready_while_the_rounds_run(tmp_path):
    """It was written when every node had joined and at the end: while the rounds ran it
    said "joined" (a helper's audit)."""
    seen = []

    def hook(rnd, records):
        nodes = json.loads((tmp_path / "nodes.json").read_text())
        seen.append({n["state"] for n in nodes})

    p2pfl.run_cluster("ring:3", rounds=3, quiet=True, out=str(tmp_path), on_round=hook)
    assert seen[0] == {"ready"}
    assert {n["state"] for n in json.loads((tmp_path / "nodes.json").read_text())} == {"done"}


def test_a_graph_objects_recorded_edges_are_those_that_ran():
    """config.json listed a multigraph's parallel edges and its self-loops, which the run
    collapsed and dropped: 5 edges recorded where 3 ran (summary's edges)."""
    G = nx.MultiGraph([(0, 1), (0, 1), (1, 2), (2, 2), (2, 0)])
    p = p2pfl.plan_cluster(G, dataset="digits", rounds=1)
    edges = p.record["resolved"]["graph_edges"]
    assert sorted(map(sorted, edges)) == [[0, 1], [0, 2], [1, 2]]
    assert len(edges) == p.summary_base["edges"] == 3


def test_a_graph_objects_recorded_edges_keep_their_weights():
    """config.json left the weights out, which set the mixing weights (--mixing weight):
    the record could not say what ran."""
    G = nx.Graph()
    G.add_edge(0, 1, weight=np.float32(2.0), colour="red", where=object())
    G.add_edge(1, 2)
    G.add_edge(2, 0, weight=3)
    p = p2pfl.plan_cluster(G, dataset="digits", rounds=1, mixing="weight")
    assert p.record["resolved"]["graph_edges"] == [
        [0, 1, {"weight": 2.0, "colour": "red"}], [0, 2, {"weight": 3}], [1, 2]]
    json.dumps(p.record)  # as config.json writes it
