"""The link emulator honours its settings, on real sockets (issue 8)."""

import json
import threading
import time

import pytest
import torch
import zmq

from p2pfl.transport import Endpoint
from p2pfl.transport.links import LinkSpec


@pytest.fixture
def pair():
    ctx = zmq.Context()
    receiver = Endpoint(ctx, 1, "tcp://127.0.0.1:*")
    made = []

    def sender(spec, node_id=0):
        ep = Endpoint(ctx, node_id, "tcp://127.0.0.1:*", link=spec, link_seed=7)
        ep.connect(1, receiver.address)
        ep.send(1, "hello", 0)
        assert receiver.recv(5.0).kind == "hello"  # the connection is up
        made.append(ep)
        return ep

    yield sender, receiver
    for ep in made:
        ep.close(linger=0)
    receiver.close()
    ctx.term()


def _arrivals(receiver, n, first_wait=10.0):
    t0, times = time.monotonic(), []
    while len(times) < n:
        msg = receiver.recv(first_wait if not times else 1.0)
        if msg is None:
            break
        times.append(time.monotonic() - t0)
    return times


def test_bandwidth_moves_2_mb_in_the_nominal_time(pair):
    sender, receiver = pair
    ep = sender(LinkSpec(up_mbps=16))  # 2 MB at 16 Mbit/s: 1.0 s
    t0 = time.monotonic()
    ep.send(1, "model", 1, frames=[bytes(2_000_000)])
    msg = receiver.recv(10.0)
    elapsed = time.monotonic() - t0
    assert msg is not None and 0.85 <= elapsed <= 1.15, elapsed


def test_messages_queue_behind_each_other_on_the_uplink(pair):
    sender, receiver = pair
    ep = sender(LinkSpec(up_mbps=8))  # 10 x 100 kB at 8 Mbit/s: one every 0.1 s
    for _ in range(10):
        ep.send(1, "model", 1, frames=[bytes(100_000)])
    times = _arrivals(receiver, 10)
    assert len(times) == 10
    assert 0.85 <= times[-1] <= 1.15, times
    assert times[0] < 0.2


def test_latency_holds_while_the_sender_is_busy(pair):
    sender, receiver = pair
    ep = sender(LinkSpec(latency_ms=200))
    done = threading.Event()

    def busy():  # the node's thread trains for 0.6 s right after sending
        a = torch.randn(300, 300)
        t = time.monotonic()
        while time.monotonic() - t < 0.6:
            a = torch.tanh(a @ a)
        done.set()

    t0 = time.monotonic()
    ep.send(1, "model", 1, frames=[b"x" * 100])
    worker = threading.Thread(target=busy)
    worker.start()
    msg = receiver.recv(5.0)
    elapsed = time.monotonic() - t0
    worker.join()
    assert msg is not None and 0.17 <= elapsed <= 0.23, elapsed
    assert done.is_set()


def test_loss_loses_its_share_and_counts_it(pair):
    sender, receiver = pair
    ep = sender(LinkSpec(loss=0.1))
    for i in range(1000):
        ep.send(1, "model", 1, frames=[b"x" * 64])
    got = len(_arrivals(receiver, 1000, first_wait=5.0))
    assert 70 <= ep.emulated_lost <= 130
    assert got + ep.emulated_lost == 1000
    assert ep.counters.count("sent", peers=[1]) == 1000  # a lost message was still sent


def test_loss_spares_the_protocols_own_messages(pair):
    """Only round payloads are lost; a hello, leave, pull, catch-up or resync always
    arrives (a lost hello aborted runs at start-up)."""
    sender, receiver = pair
    ep = sender(LinkSpec(loss=0.9))
    kinds = ["hello", "leave", "pull", "catchup", "resync"] * 20
    for k in kinds:
        ep.send(1, k, 1)
    for _ in range(200):
        ep.send(1, "model", 1, frames=[b"x" * 64])
    got = []
    while (msg := receiver.recv(2.0)) is not None:
        got.append(msg.kind)
    assert sorted(k for k in got if k != "model") == sorted(kinds)
    assert got.count("model") + ep.emulated_lost == 200 and ep.emulated_lost >= 150


def test_what_the_emulator_drops_is_counted_and_not_sent():
    """A full receiving queue behind an emulated link dropped messages that stayed
    counted as sent and appeared in no drop count."""
    ctx = zmq.Context()
    receiver = Endpoint(ctx, 1, "tcp://127.0.0.1:*", hwm=50)
    ep = Endpoint(ctx, 0, "tcp://127.0.0.1:*", hwm=50, link=LinkSpec(latency_ms=1),
                  link_seed=1)
    try:
        ep.connect(1, receiver.address)
        ep.send(1, "hello", 0)
        assert receiver.recv(5.0).kind == "hello"
        for i in range(2000):  # the receiver reads nothing meanwhile
            ep.send(1, "catchup" if i % 2 else "model", 1, frames=[bytes(20_000)])
        time.sleep(1.0)
        got = len(_arrivals(receiver, 2000, first_wait=2.0))
        sent, dropped = ep.counters.count("sent", peers=[1]), ep.counters.dropped
        assert 0 < got < 2000 and sent == got + dropped["arrival_queue_full"]
        assert sent + dropped["send_queue_full"] == 2000  # the rest met a full backlog
    finally:
        ep.close(linger=0)
        receiver.close()
        ctx.term()


def test_a_slow_uplinks_backlog_is_bounded_and_its_leftovers_counted(pair):
    """The uplink queued without bound (691 MB in an asynchronous run), and what it
    still held when the node stopped counted as sent, although it never left."""
    sender, receiver = pair
    ep = sender(LinkSpec(up_mbps=0.8))  # 100 kB/s: a 10 kB message every 0.1 s
    ep.hwm = 12  # the per-peer backlog's bound, as a socket's queue
    accepted = sum(ep.send(1, "model", 1, frames=[bytes(10_000)]) > 0 for _ in range(30))
    assert accepted == 12 and ep.counters.dropped["send_queue_full"] == 18
    got = len(_arrivals(receiver, 3, first_wait=2.0))
    assert got == 3 and 0 < ep.link_backlog() < 12
    ep.discard_link_backlog()
    assert ep.link_backlog() == 0
    sent = ep.counters.count("sent", peers=[1])
    assert sent + ep.counters.dropped["link_unsent"] == 12
    time.sleep(0.5)
    assert sent == 3 + len(_arrivals(receiver, 12, first_wait=0.3))  # nothing more left


def test_a_message_counts_as_sent_when_it_leaves_not_when_it_arrives(pair):
    """Latency is flight, not uplink: a message 500 ms from its peer has been sent, and
    the end of a run does not drop it (it was counted link_unsent, and never came)."""
    sender, receiver = pair
    ep = sender(LinkSpec(latency_ms=500))
    ep.send(1, "model", 1, frames=[bytes(1000)])
    time.sleep(0.1)
    assert ep.counters.count("sent", peers=[1]) == 1 and ep.link_backlog() == 0
    ep.discard_link_backlog()
    assert receiver.recv(2.0) is not None and not ep.counters.dropped["link_unsent"]
    lossy = sender(LinkSpec(up_mbps=0.08, loss=0.999), node_id=2)  # 10 kB/s
    for _ in range(3):
        lossy.send(1, "model", 1, frames=[bytes(10_000)])  # one a second on the uplink
    time.sleep(0.3)
    assert lossy.counters.count("sent", peers=[1]) == 0  # a loss still takes its time
    lossy.discard_link_backlog()
    assert lossy.counters.dropped["link_unsent"] == 3 and lossy.emulated_lost == 0


def test_a_finished_nodes_leave_is_not_dropped_with_its_unsent_payloads(tmp_path):
    """The end of a run dropped everything still on the uplink, the final leave too: a
    neighbour offline until 20 s never learnt that the others were done, and sat its
    period out (24.8 s, against 3.9 s before)."""
    from p2pfl import run_cluster

    prof = tmp_path / "off.toml"
    prof.write_text("[nodes.2]\noffline = [[1.0, 20.0]]\n")
    s = run_cluster("ring:4", rounds=100, schedule="async", round_timeout=2, slowdown=10,
                    algorithm="dpsgd", profiles=str(prof), link="up_mbps=20",
                    dataset="digits", quiet=True, out=str(tmp_path / "run")).summary
    assert s["failed_nodes"] == {} and s["wall_s"] < 12, s["wall_s"]


def test_an_asynchronous_run_counts_only_what_left_its_slow_links(tmp_path):
    """At 0.5 Mbit/s nodes finish 30 asynchronous rounds long before their 60
    messages of 19 kB each could leave: the summary said 3.5 MB were sent."""
    from p2pfl import run_cluster

    s = run_cluster("ring:3", rounds=30, schedule="async", eval_every=100, dataset="digits",
                    link="up_mbps=0.5", quiet=True, out=str(tmp_path)).summary
    assert s["failed_nodes"] == {}
    assert s["dropped"].get("link_unsent", 0) > 0
    # 30 models to each of two neighbours, fewer to one that said it was done (how many
    # fewer depends on the nodes' pace: 148 and 172 of 180 seen)
    assert 90 < s["model_messages_total"] + s["dropped"]["link_unsent"] <= 180
    # and each node's leave to its two neighbours, which always leaves
    assert s["messages_sent_total"] == s["model_messages_total"] + 6
    assert s["bytes_sent_total"] <= 19_300 * s["messages_sent_total"]


def test_a_lossy_ring_starts_and_finishes(tmp_path):
    from p2pfl import run_cluster

    res = run_cluster("ring:4", rounds=3, link="loss=0.5", start_timeout=15, round_timeout=2,
                      seed=2, quiet=True, in_process=True, out=str(tmp_path))
    s = res.summary
    assert s["failed_nodes"] == {} and s["emulated_lost_total"] > 0
    assert {r["round"] for r in res.metrics} == {1, 2, 3}


def test_latency_adds_to_a_synchronous_round(tmp_path):
    from p2pfl import run_cluster

    per_round = {}
    for name, link in (("plain", None), ("slow", "latency_ms=200")):
        res = run_cluster("line:2", rounds=12, eval_every=100, quiet=True, link=link,
                          out=str(tmp_path / name))
        wall = {r["round"]: r["wall_s"] for r in res.metrics if r["node"] == 0}
        per_round[name] = (wall[12] - wall[2]) / 10
        with open(tmp_path / name / "summary.json") as fh:
            summary = json.load(fh)
        assert summary["messages_sent_total"] == 2 * 12 and summary["emulated_lost_total"] == 0
    added = per_round["slow"] - per_round["plain"]
    assert 0.17 <= added <= 0.23, per_round


@pytest.mark.parametrize("field, value", [
    ("latency_ms", float("nan")), ("latency_ms", float("inf")), ("jitter_ms", 1e300),
    ("up_mbps", float("inf")), ("up_mbps", float("nan"))])
def test_link_values_must_be_finite(field, value):
    """latency_ms=nan switched emulation off without a word; inf or 1e300 crashed the
    emulator thread (OverflowError) and the run failed at start-up."""
    from p2pfl.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        LinkSpec(**{field: value})


def test_a_coordinators_last_record_counts_its_final_models_on_a_slow_link(tmp_path):
    """A message is counted when it leaves the emulated uplink, and the last round was
    recorded before the final models had left: that round's row of bytes_per_round
    lacked them (only the totals had them)."""
    from p2pfl import run_cluster

    res = run_cluster(mode="fedavg", nodes=3, rounds=2, eval_every=100, link="up_mbps=20",
                      dataset="digits", quiet=True, out=str(tmp_path))
    s = res.summary
    coord = [r for r in res.metrics if r["role"] == "coordinator"]
    assert s["failed_nodes"] == {} and [r["round"] for r in coord] == [1, 2]
    # each round: a model down to each of 3 workers; the last round, 3 final models too
    assert coord[1]["bytes_sent"] > 1.9 * coord[0]["bytes_sent"]
    assert sum(r["bytes_sent"] for r in coord) == s["bytes_down_total"]


def test_a_link_slower_than_the_round_timeout_is_warned_of(tmp_path):
    """Every model came after its round, the nodes learned alone, and the run exited 0
    without a word (a helper's audit).  The plan warns where the latency alone reaches
    --round-timeout, and the run's end where misses are as many as half the messages."""
    from p2pfl.config_files import from_sources
    from p2pfl.plan import plan
    from tests._inproc import cli_here

    late = plan(from_sources(None, dict(topology="ring:4", link="latency_ms=600",
                                        round_timeout=0.5)))
    assert [x for x in late.info if x.startswith("warning: the link latency of node(s) 0, 1, "
                                                  "2, 3 reaches --round-timeout (0.5 s)")]
    assert not [x for x in plan(from_sources(None, dict(topology="ring:4", link="latency_ms=400",
                                                        round_timeout=0.5))).info
                if "latency" in x]
    res = cli_here("cluster", "--topology", "ring:3", "--dataset", "digits", "--rounds", "2",
                   "--link", "latency_ms=600", "--round-timeout", "0.5", "--in-process",
                   "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "warning: 12 neighbours' models missed their round" in res.stderr, res.stderr
    assert "--link too slow" in res.stderr, res.stderr


def test_a_server_runs_round_trip_latency_is_warned_of():
    """The coordinator waits a round time-out from its instructions: 5.1 s of latency on
    every link missed every reply of every round (the global model never changed) while
    the plan checked each link's latency alone against the 10 s, and said nothing."""
    from p2pfl.config_files import from_sources
    from p2pfl.plan import plan

    def warned(**kw):
        info = plan(from_sources(None, dict(mode="fedavg", nodes=3, dataset="digits",
                                            **kw))).info
        return [x for x in info if "latency" in x]

    assert warned(link="latency_ms=5100") == [
        "warning: the link latency of the coordinator and of worker(s) 0, 1, 2 together "
        "reaches --round-timeout (10 s): their replies come after their round, and are "
        "missed"]
    assert warned(link="latency_ms=4900") == []


def test_a_run_whose_models_never_left_their_slow_links_is_warned_of(tmp_path):
    """Asynchronous nodes finished 10 rounds in 0.3 s while their first model needed
    0.31 s to leave a 0.5 Mbit/s uplink: nothing was exchanged (60 link_unsent, 0 MB
    sent), the nodes learned alone, and the run exited 0 without a word."""
    from tests._inproc import cli_here

    res = cli_here("cluster", "--topology", "ring:3", "--dataset", "digits", "--rounds", "10",
                   "--schedule", "async", "--link", "up_mbps=0.5", "--in-process",
                   "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "models never left their node's emulated uplink (link_unsent)" in res.stderr, \
        res.stderr


def test_a_latency_that_reaches_the_start_timeout_is_refused_before_any_node_starts():
    """The start-up hello travels the emulated link: latency_ms=6000 with
    --start-timeout 5 started every node, then failed with "3 node(s) not ready after
    5 s" (exit 1), naming no link."""
    from tests._inproc import cli_here

    for mode, nodes in ((("--topology", "ring:3"), "0, 1, 2"),
                        (("--mode", "fedavg", "--nodes", "3"), "0, 1, 2, coordinator")):
        res = cli_here("cluster", *mode, "--dataset", "digits", "--rounds", "1", "--link",
                       "latency_ms=6000", "--start-timeout", "5", "--dry-run")
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines()[-1] == (
            f"p2pfl: error: the link latency of node(s) {nodes} reaches --start-timeout "
            "(5 s): their start-up hello would come after it"), res.stderr


def test_a_server_run_whose_replies_mostly_came_late_is_warned_of_at_its_end(tmp_path):
    """Replies that miss their round leave the global model as it was; the end-of-run
    warning was for gossip only, and a server run whose every reply timed out exited 0
    in silence.  The summary now counts the replies asked for and those on time."""
    import json

    from tests._inproc import cli_here

    res = cli_here("cluster", "--mode", "fedavg", "--nodes", "2", "--dataset", "digits",
                   "--rounds", "2", "--link", "latency_ms=600", "--round-timeout", "1",
                   "--in-process", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert ("warning: 4 of the 4 replies the coordinator asked for did not come within "
            "their round: a --link too slow for --round-timeout?") in res.stderr, res.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["participants_total"] == 4 and summary["replies_ok_total"] == 0
    res = cli_here("cluster", "--mode", "fedavg", "--nodes", "2", "--dataset", "digits",
                   "--rounds", "2", "--in-process", "--out", str(tmp_path / "ok"))
    assert res.returncode == 0 and "did not come within" not in res.stderr, res.stderr
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["participants_total"] == summary["replies_ok_total"] == 4


def test_a_diverged_run_is_not_blamed_on_the_links(tmp_path):
    """With --lr 1e30 every model went non-finite and was dropped as undecodable; the
    warning asked whether a --link was too slow for --round-timeout (a data audit).  Every
    node now stops as diverged (test_diverged.py)."""
    from tests._inproc import cli_here

    res = cli_here("cluster", "--topology", "ring:3", "--dataset", "digits", "--rounds", "2",
                   "--lr", "1e30", "--in-process", "--out", str(tmp_path))
    assert res.returncode == 1, res.stderr
    assert "every node failed (node 0: diverged: " in res.stderr, res.stderr
    assert "--link too slow" not in res.stderr, res.stderr
