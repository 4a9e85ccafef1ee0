"""Many node actors per process (``--in-process``, ``--procs``), issue 10.

Real host processes, real ipc and inproc sockets: the nodes of an in-process
cluster are actors of a few forked host processes, take fair turns on each
host's CPU, and measure round time-outs on the host's idle clock.
"""

import json
import os
import threading
import time

import pytest

from p2pfl import run_cluster
from p2pfl.transport.cpugate import CpuGate
from tests._inproc import cli_here

def test_the_gate_serves_first_come_first_served_and_counts_only_idle_time():
    gate = CpuGate()
    order, started = [], []
    gate.acquire()
    t_idle = gate.idle_clock()

    def actor(k):
        started.append(k)
        with gate:
            order.append(k)

    threads = []
    for k in range(5):  # queue up one after the other, while the gate is held
        threads.append(threading.Thread(target=actor, args=(k,)))
        threads[-1].start()
        while len(gate._queue) < k + 1:
            time.sleep(0.001)
    time.sleep(0.2)  # held: the host is busy, its idle clock stands still
    assert gate.idle_clock() - t_idle < 0.05
    gate.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]
    t0 = gate.idle_clock()
    time.sleep(0.2)  # nobody holds it: idle time passes
    assert gate.idle_clock() - t0 >= 0.19
    assert gate.compute(lambda: threading.current_thread().name).startswith("p2pfl-compute")
    gate.close()


def _nodes(out):
    with open(os.path.join(out, "nodes.json")) as fh:
        return json.load(fh)


def test_in_process_nodes_live_in_host_processes_and_learn_the_same(tmp_path):
    """--procs 3 puts the nodes in three forked host processes (not this one), and
    the run learns exactly what the same run with one host learns."""
    runs = {}
    for procs in (1, 3):
        out = str(tmp_path / f"p{procs}")
        res = run_cluster("ring:6", rounds=15, in_process=True, procs=procs, quiet=True,
                          out=out)
        pids = {row["pid"] for row in _nodes(out)}
        assert len(pids) == procs and os.getpid() not in pids
        assert res.summary["node_processes"] == procs
        assert res.summary["misses_total"] == 0 and res.summary["failed_nodes"] == {}
        assert res.summary["peak_rss_bytes"] > 0
        # forked hosts share pages that each one's peak RSS counts: their proportional
        # shares add up to less (1,053 MB against 441 MB for four hosts of ring:16)
        assert 0 < res.summary["pss_bytes_total"] < res.summary["peak_rss_bytes"]
        runs[procs] = res.summary["accuracy_per_round"]
    assert runs[1] == runs[3]  # lock-step gossip: where an actor lives changes nothing
    assert runs[3][-1][1] > 0.85  # [round, mean accuracy]


def test_a_busy_host_costs_no_time_outs(tmp_path):
    """128 actors on one host: a round takes longer than the 0.15 s time-out, since
    each actor waits for its turn on the CPU, yet nobody times out: the time-out
    counts idle seconds, and the host is never idle while actors wait their turn."""
    res = run_cluster("random_regular:4:128", dataset="mnist1d", rounds=4, in_process=True,
                      procs=1, round_timeout=0.15, quiet=True, out=str(tmp_path / "busy"))
    s = res.summary
    walls = sorted({r["round"]: r["wall_s"] for r in res.metrics}.items())
    per_round = (walls[-1][1] - walls[0][1]) / (len(walls) - 1)
    assert per_round > 0.15, per_round  # the host really was busier than the time-out
    assert s["misses_total"] == 0 and s["failed_nodes"] == {}


def test_a_slow_peer_still_times_out(tmp_path):
    """Time-outs keep their meaning: a neighbour whose messages take 0.6 s (an
    emulated link) is missed when the time-out is 0.2 s of idle host."""
    profile = tmp_path / "slow.toml"
    profile.write_text('[nodes."3"]\nlink = "latency_ms=600"\n')
    res = run_cluster("ring:6", rounds=6, in_process=True, procs=2, round_timeout=0.2,
                      quiet=True, profiles=str(profile), out=str(tmp_path / "slow"))
    finals = {r["node"]: r["misses"] for r in res.metrics if r["round"] == 6}
    assert finals[2] > 0 and finals[4] > 0  # node 3's neighbours missed it
    assert res.summary["failed_nodes"] == {}


@pytest.mark.parametrize("flags, words", [
    (["--procs", "2"], "--procs needs --in-process"),
    (["--in-process", "--procs", "0"], "--procs must be >= 1"),
    (["--in-process", "--transport", "inproc", "--procs", "2"], "--procs 1"),
])
def test_hosting_usage_errors_exit_2(tmp_path, flags, words):
    proc = cli_here("cluster", "--topology", "ring:4", "--rounds", "1", "--out",
                    str(tmp_path / "o"), *flags)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_an_asynchronous_actors_wait_counts_wall_seconds_while_others_compute():
    """The host's idle clock stands still while any actor computes, and asynchronous
    actors never block: an asynchronous actor's 0.5 s wait (a rejoin's catch-up) did
    not end until every other actor of the host had finished its run."""
    import zmq

    from p2pfl.transport.endpoint import Endpoint
    from p2pfl.transport.mailbox import Mailbox

    ctx, gate = zmq.Context(), CpuGate()
    boxes = {i: Mailbox(Endpoint(ctx, i, f"inproc://wall-{i}"), gate=gate) for i in "AB"}
    boxes["B"].asynchronous = True
    stop, took = threading.Event(), []

    def busy():
        with gate:
            while not stop.is_set():
                sum(range(20000))  # a training step, then the others' turn (drain)
                boxes["A"].take_turns()

    def waiting():
        with gate:
            t0 = time.monotonic()
            boxes["B"].poll_control(0.5)
            took.append(time.monotonic() - t0)

    threads = [threading.Thread(target=busy), threading.Thread(target=waiting)]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    threads[1].join(5.0)
    stop.set()
    for t in threads:
        t.join()
    ctx.destroy(linger=0)
    assert took and took[0] < 2.0, took


@pytest.mark.parametrize("secure", [False, True])
def test_a_host_of_many_actors_with_emulated_links_has_sockets_for_all(secure):
    """The context allowed degree + 4 sockets an actor; an emulated link's pipe takes two
    more, so past ~150 linked actors a host's link threads died of "Too many open files".
    CURVE's socket monitors take four more: 1,024 secure actors on 2 hosts failed so.
    Actors of one host talk over inproc, where CURVE does not run, even when secure."""
    from p2pfl.transport import Endpoint
    from p2pfl.transport.links import LinkSpec
    from p2pfl.transport.security import KeyPair, Security
    from p2pfl.worker import actor_context, fds_per_actor, raise_fd_limit

    n = 300
    raise_fd_limit(n * fds_per_actor(2, secure) + 256)
    ctx = actor_context(n, 2, secure)
    pairs = [KeyPair.generate() for _ in range(n + 1)]
    bound = {i: k.public for i, k in enumerate(pairs[:n])} | {"launcher": pairs[n].public}
    eps = []
    try:
        for i in range(n):
            security = Security(pairs[i], bound) if secure else None
            eps.append(Endpoint(ctx, i, f"inproc://hd{i}", control=f"inproc://hc{i}",
                                link=LinkSpec(latency_ms=1), security=security))
            eps[-1].connect("launcher", "inproc://h-launcher", emulated=False)
        for i, ep in enumerate(eps):
            for j in ((i + 1) % n, (i - 1) % n):
                ep.connect(j, f"inproc://hd{j}")
                ep.send(j, "hello", 1)
        got, deadline = 0, time.monotonic() + 10
        while got < 2 * n and time.monotonic() < deadline:
            for ep in eps:
                while ep.recv(0) is not None:
                    got += 1
            time.sleep(0.01)
        assert got == 2 * n and not any(ep.counters.dropped for ep in eps)
    finally:
        for ep in eps:
            ep.close(linger=0)
        ctx.destroy(linger=0)
