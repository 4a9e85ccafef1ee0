"""Addresses: a bad --listen, --host or --connect is one line and exit 2 before any
node starts; a launcher or nodes that never show up end in one line, exit 1."""

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import zmq

from p2pfl.errors import UsageError
from p2pfl.runtime import LAUNCHER
from p2pfl.transport import Endpoint
from p2pfl.addresses import check_advertise, free_port, tcp_address
from tests._remote import await_zeromq, read_until, release, spare_node
from tests._forked import CLI, Forked
from tests._forked import run as forked_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOWHERE = "192.0.2.1"  # TEST-NET-1: documentation only, an address of no machine



def run(*args, timeout=60) -> tuple:
    """Run the CLI; return (its result, its wall time in seconds)."""
    t0 = time.monotonic()
    res = forked_run([*CLI, *map(str, args)], cwd=ROOT, text=True, capture_output=True,
                     timeout=timeout)
    return res, time.monotonic() - t0


def one_line(stderr: str, width: int = 100) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and len(lines[0]) <= width, lines[0]
    return lines[0]


@pytest.fixture
def taken():
    """A port on 127.0.0.1 that someone else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("flags, words", [
    (["--listen", "foo"], "expected tcp://HOST:PORT"),
    (["--listen", "tcp://127.0.0.1"], "expected tcp://HOST:PORT"),
    (["--listen", "tcp://127.0.0.1:99999"], "PORT 1-65535"),
    (["--listen", "tcp://127.0.0.1:0"], "PORT 1-65535"),
    (["--listen", "ipc:///tmp/x.sock"], "expected tcp://HOST:PORT"),
    (["--listen", f"tcp://{NOWHERE}:5555"], "not an address of this machine"),
    (["--listen", "tcp://TAKEN"], "Address already in use"),
    (["--host", "999.1.1.1"], "not an IPv4 address or a known host name"),
    (["--host", NOWHERE], "not an address of this machine"),
])
def test_cluster_bad_address_is_exit_2_before_any_node(tmp_path, taken, flags, words):
    flags = [f.replace("TAKEN", f"127.0.0.1:{taken}") for f in flags]
    res, wall = run("cluster", "--topology", "ring:4", "--rounds", "2", "--start-timeout", "5",
                    "--out", tmp_path, *flags)  # not quiet: nothing else may be printed
    assert res.returncode == 2 and wall < 15
    line = one_line(res.stderr)
    assert line.startswith("p2pfl: error: ") and words in line
    assert not os.listdir(tmp_path)  # no config.json, metrics.jsonl or nodes.json


def test_a_bad_address_in_the_config_file_is_caught_too(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'topology = "ring:4"\nhost = "{NOWHERE}"\n')
    res, wall = run("cluster", "--config", cfg, "--out", tmp_path)
    assert res.returncode == 2 and wall < 15
    assert one_line(res.stderr, 200) == (  # the file's key, not a flag never given
        f"p2pfl: error: {cfg}: host '{NOWHERE}': not an address of this machine")


def test_nodes_that_never_join_end_the_run_in_one_line(tmp_path):
    res, wall = run("cluster", "--topology", "ring:4", "--listen",
                    f"tcp://127.0.0.1:{free_port()}", "--start-timeout", "2", "-q",
                    "--out", tmp_path)
    assert res.returncode == 1 and wall < 30
    assert one_line(res.stderr) == "p2pfl: error: 4 node(s) not joined after 2 s: [0, 1, 2, 3]"


@pytest.mark.parametrize("flags, words", [
    (["--connect", "foo", "--id", "3"], "--connect 'foo': expected tcp://HOST:PORT"),
    (["--connect", "tcp://127.0.0.1", "--id", "1"], "expected tcp://HOST:PORT"),
    (["--connect", "tcp://127.0.0.1:65536", "--id", "1"], "PORT 1-65535"),
    (["--connect", "tcp://127.0.0.1:*", "--id", "1"], "PORT 1-65535"),
    (["--connect", "tcp://127.0.0.1:5555", "--id", "-1"], "--id must be in [0, 2147483647]"),
    (["--connect", "tcp://127.0.0.1:5555", "--id", str(2**64)], "--id must be in [0, "),
    (["--connect", "tcp://127.0.0.1:5555", "--id", "1", "--host", NOWHERE],
     "not an address of this machine"),
    (["--connect", "tcp://127.0.0.1:5555", "--id", "1", "--start-timeout", "0"],
     "--start-timeout must be positive"),
    (["--connect", "tcp://127.0.0.1:5555", "--id", "1", "--lost-after", "-1"],
     "--lost-after must be positive and finite (seconds), got -1.0"),
    (["--connect", "tcp://127.0.0.1:5555", "--id", "1", "--start-timeout", "inf"],
     "--start-timeout must be positive and finite (seconds), got inf"),
    # the node waited its start time-out and exited 1 (an audit); with host:port the
    # launcher took the join and the run failed later
    *[(["--connect", f"tcp://127.0.0.1:{free_port()}", "--id", "1", "--host", "127.0.0.1",
        "--start-timeout", "2", "--advertise", bad],
       f"--advertise {bad!r}: expected a host name or IPv4 address, no tcp:// or port")
      for bad in ("bad host", "127.0.0.1:5555", "tcp://127.0.0.1")],
    (["--connect", f"tcp://127.0.0.1:{free_port()}", "--id", "1", "--host", "127.0.0.1",
      "--start-timeout", "2", "--advertise", "0.0.0.0"],
     "--advertise 0.0.0.0: peers cannot reach that address; give this host's name or IP"),
])
def test_node_bad_flags_are_exit_2_at_once(flags, words):
    res, wall = run("node", *flags)
    assert res.returncode == 2 and wall < 15
    assert words in one_line(res.stderr)


def test_node_says_when_no_launcher_answers():
    """Nothing listens at the address: no connection ever came up, and the node says so
    (it used to list that among other causes)."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    res, wall = run("node", "--connect", addr, "--id", "3", "--start-timeout", "2")
    assert res.returncode == 1 and wall < 15
    line = one_line(res.stderr, width=200)
    assert line.startswith("p2pfl: error: node 3: ")
    assert f"no connection to the launcher at {addr} came up in 2 s: is it running, at " \
           "that address" in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_node_that_never_reached_its_launcher_stops_at_once_on_a_signal(sig):
    """Its join could not leave, yet the node waited 2 s for it before exiting, and
    said that 'all nodes' had stopped."""
    proc = Forked([*CLI, "node", "--connect", f"tcp://127.0.0.1:{free_port()}",
                   "--id", "0"], cwd=ROOT, text=True, stderr=subprocess.PIPE)
    try:
        await_zeromq(proc)  # imported, bound, and waiting for the launcher
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig
        took = time.monotonic() - sent
        word = "interrupted" if sig == signal.SIGINT else "terminated"
        assert proc.stderr.read() == f"p2pfl: {word}\n"
        assert took < 1.0, took
    finally:
        proc.kill()


def test_node_says_when_a_connected_launcher_does_not_answer_its_join():
    """A ZeroMQ socket takes the connection (the ZMTP handshake succeeds) but never
    answers the join: the node names the join, not the address."""
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)
    try:
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        addr = f"tcp://127.0.0.1:{port}"
        res, wall = run("node", "--connect", addr, "--id", "3", "--start-timeout", "2")
        got = silent.recv_multipart(zmq.NOBLOCK)  # the join came, and went unanswered
    finally:
        ctx.destroy(linger=0)
    assert res.returncode == 1 and wall < 15 and len(got) >= 2
    line = one_line(res.stderr, width=200)
    assert f"the launcher at {addr} did not answer this join in 2 s: it refused it or " \
           "cannot reach tcp://" in line


def _listening_launcher(tmp_path, addr: str, start_timeout: float, *extra) -> subprocess.Popen:
    """`p2pfl cluster --listen`, returned once it waits for its nodes."""
    proc = Forked([*CLI, "cluster", "--topology", "ring:4", "--listen", addr,
                   "--start-timeout", str(start_timeout), "--out", str(tmp_path),
                   *extra],
                  cwd=ROOT, text=True, stderr=subprocess.PIPE)
    try:
        read_until(proc, "waiting for 4 node(s) to join at")
    except AssertionError:
        proc.kill()
        raise
    return proc


def test_a_node_that_reached_the_launcher_says_so(tmp_path):
    """A node that joined waits while the launcher waits for the others (its heartbeats
    reset the node's start time-out: a node of --start-timeout 1 joined first gave up,
    and its error failed the run); the launcher that gives up says so to every node, and
    a launcher gone silent is named as such."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    launcher = _listening_launcher(tmp_path, addr, 4)  # forked nodes join within it
    node = [*CLI, "node", "--connect", addr, "--host", "127.0.0.1", "--start-timeout"]
    patient = [Forked([*node, "1", "--id", k], cwd=ROOT, text=True,  # had not
                      stderr=subprocess.PIPE) for k in ("0", "1")]  # all joined
    try:
        assert launcher.wait(timeout=30) == 1  # 2 of its 4 nodes joined in 4 s
        assert "2 node(s) not joined after 4 s" in launcher.stderr.read()
        for k, proc in enumerate(patient):
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 1
            assert one_line(err) == (f"p2pfl: error: node {k}: the launcher ended the run "
                                     "before it started")
    finally:
        for proc in (launcher, *patient):
            proc.kill()
    launcher = _listening_launcher(tmp_path, addr, 60)
    node = Forked([*CLI, "node", "--connect", addr, "--host", "127.0.0.1",
                   "--start-timeout", "2", "--id", "0"], cwd=ROOT, text=True,
                  stderr=subprocess.PIPE)
    try:
        time.sleep(4)  # joined, and waiting: the launcher's heartbeats come
        assert node.poll() is None
        launcher.send_signal(signal.SIGSTOP)  # hung: no heartbeat comes any more
        _, err = node.communicate(timeout=30)
        assert node.returncode == 1
        assert one_line(err) == (f"p2pfl: error: node 0: no word from the launcher at {addr} "
                                 "for 2 s before the start")
    finally:
        launcher.send_signal(signal.SIGCONT)
        for proc in (launcher, node):
            proc.kill()


def test_a_join_from_an_id_the_run_lacks_is_refused_and_told(tmp_path):
    """The launcher dropped it in silence; the node only timed out, 'could not reach'.
    Now the node hears why at once, and exits 2; the launcher's log says it too."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    launcher = _listening_launcher(tmp_path, addr, start_timeout=60)
    try:
        res, wall = run("node", "--connect", addr, "--id", "7", "--host", "127.0.0.1",
                        "--start-timeout", "30")
        assert res.returncode == 2 and wall < 20
        assert one_line(res.stderr, 160) == ("p2pfl: error: node 7: the launcher refused this "
                                             "node: no node of this run has that id")
        launcher.kill()
        rest = launcher.communicate(timeout=30)[1]
        assert "a join from node id 7 was refused: no node of this run has that id" in rest
    finally:
        launcher.kill()


def test_a_second_process_with_a_joined_id_is_refused_and_told(tmp_path):
    """Two `p2pfl node --id 1`: the launcher's ROUTER refused the second connection, for
    its routing id, and the second node timed out.  Now it is refused and told who has
    the id.  If the one taken dies before the start, a new process takes its place.
    And a process that says it is node 1 before node 1 joined (one of an earlier run)
    no longer fails node 1."""
    from p2pfl.transport.sockets import process_identity

    addr = f"tcp://127.0.0.1:{free_port()}"
    launcher = _listening_launcher(tmp_path, addr, start_timeout=60)
    ctx = zmq.Context()
    stale = Endpoint(ctx, 1, "tcp://127.0.0.1:*")
    stale.connect(LAUNCHER, addr, emulated=False, routing_id=process_identity(1))
    stale.send(LAUNCHER, "error", meta={"reason": "a node of an earlier run"})
    stale.close()
    ctx.term()
    node = [*CLI, "node", "--connect", addr, "--host", "127.0.0.1", "--start-timeout", "60"]
    ones = [Forked([*node, "--id", "1"], cwd=ROOT, text=True, stderr=subprocess.PIPE)
            for _ in range(2)]
    others = []
    try:
        t0 = time.monotonic()
        while all(p.poll() is None for p in ones) and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        refused = next((p for p in ones if p.poll() is not None), None)
        assert refused is not None and refused.returncode == 2
        taken = ones[1 - ones.index(refused)]
        said = one_line(refused.stderr.read(), 200)
        assert said.startswith("p2pfl: error: node 1: the launcher refused this node: node 1 "
                               "has joined already, from host "), said
        assert said.endswith(f", pid {taken.pid}"), said
        # the one taken dies before the start, and is started again: its connection is
        # down, so the new process takes its place (it was refused as a second one)
        taken.kill()
        taken.wait()
        time.sleep(1.5)
        again = Forked([*node, "--id", "1"], cwd=ROOT, stderr=subprocess.DEVNULL)
        others = [again] + [Forked([*node, "--id", k], cwd=ROOT,
                                   stderr=subprocess.DEVNULL) for k in ("0", "2", "3")]
        assert launcher.wait(timeout=120) == 0  # the node 1 taken ran to the end
        assert all(p.wait(timeout=30) == 0 for p in others)
        assert "a join from node id 1 was refused: node 1 has joined already" in (
            launcher.stderr.read())
    finally:
        for proc in (launcher, *ones, *others):
            proc.kill()


def _join_as(addr: str, node_id, control: str) -> None:
    """Join ``addr``'s launcher as ``node_id`` with ``control`` as both addresses, and
    exit: a process killed right after it sent its join."""
    import p2pfl
    from p2pfl.transport.sockets import process_identity

    ctx = zmq.Context()
    ep = Endpoint(ctx, node_id, "tcp://127.0.0.1:*")
    ep.connect(LAUNCHER, addr, emulated=False, routing_id=process_identity(node_id))
    ep.send(LAUNCHER, "join", meta={"address": control, "control": control,
                                    "version": p2pfl.__version__})
    time.sleep(0.5)  # the join is taken
    ep.close()
    ctx.term()


@pytest.mark.parametrize("last", [False, True])
def test_a_node_that_dies_before_the_launcher_reaches_it_is_waited_for_again(tmp_path, last):
    """A node whose process joins and dies before the launcher's connection to it is up
    was never seen as lost: its id stayed taken, a new process for it was refused, and
    the run failed at its start time-out (its neighbours never heard from it).  Its
    connection now counts as down once the launcher's attempt to make it is refused, so
    that a new process takes its place;
    and the configs go out only once every node's connection is up, so that one that
    joined last is waited for again too (``last``), not failed after them.  Joins whose
    control address ZeroMQ cannot connect to are refused (they ended the launcher with a
    ZMQError)."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    launcher = _listening_launcher(tmp_path, addr, start_timeout=60)
    node = [*CLI, "node", "--connect", addr, "--host", "127.0.0.1", "--start-timeout", "60"]
    procs, said = [], ""
    dead = f"tcp://127.0.0.1:{free_port()}"  # where the dead process said it listened
    try:
        too_long = "ipc:///tmp/" + "x" * 200  # passes the check; ZeroMQ refuses to connect
        for k, bad in ((2, "tcp://127.0.0.1"), (3, too_long)):
            _join_as(addr, k, bad)  # refused: each logged once per process and id
        if last:  # the others join first
            procs = [Forked([*node, "--id", k], cwd=ROOT, stderr=subprocess.DEVNULL)
                     for k in ("0", "2", "3")]
            said = read_until(launcher, "(3 of 4)")
        _join_as(addr, 1, dead)
        procs += [Forked([*node, "--id", k], cwd=ROOT, stderr=subprocess.DEVNULL)
                  for k in (("1",) if last else ("1", "0", "2", "3"))]
        assert launcher.wait(timeout=40) == 0
        assert [p.wait(timeout=30) for p in procs] == [0] * 4
        said += launcher.stderr.read()
        assert re.search(r"^node 1 joined from \S+, pid \d+ \([1-4] of 4\)$", said, re.M)
        assert "node 1 joined from an unnamed host (" in said and " (4 of 4)\n" in said
        assert f"the launcher cannot connect to node 1's control address {dead} before the " \
               "start; waiting for it to join again" in said
        assert "a join from node id 2 was refused: its join has no data and control " \
               "addresses that ZeroMQ can connect to" in said
        assert "a join from node id 3 was refused: the launcher cannot connect to its " \
               "control address 'ipc:///tmp/xxx" in said
    finally:
        for proc in (launcher, *procs):
            proc.kill()


def test_a_node_lost_after_the_configs_went_out_fails_the_start_at_once(tmp_path):
    """A remote node whose process dies after its config came, before it is ready, cannot
    come back before the start (its peers have its address; a new process is refused):
    the start waited out its time-out (60 s here).  It now fails once the connection has
    been down ``--lost-after`` (3 s here)."""
    import p2pfl
    from p2pfl.transport.sockets import process_identity

    addr = f"tcp://127.0.0.1:{free_port()}"
    launcher = _listening_launcher(tmp_path, addr, 60, "--lost-after", "3")
    ctx = zmq.Context()
    doomed = Endpoint(ctx, 1, "tcp://127.0.0.1:*", control="tcp://127.0.0.1:*")
    doomed.connect(LAUNCHER, addr, emulated=False, routing_id=process_identity(1))
    doomed.send(LAUNCHER, "join", meta={"address": doomed.address,
                                        "control": doomed.control_address,
                                        "version": p2pfl.__version__})
    node = [*CLI, "node", "--connect", addr, "--host", "127.0.0.1", "--start-timeout", "60"]
    others = [Forked([*node, "--id", k], cwd=ROOT, stderr=subprocess.DEVNULL)
              for k in ("0", "2", "3")]
    # imported ahead: the launcher fails the start 3 s after the loss, and a loaded
    # machine's imports took longer than that
    again = spare_node(addr, 1, "--start-timeout", "60", text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        msg = None
        while time.monotonic() < deadline and not (msg and msg.kind == "config"):
            msg = doomed.recv(0.5)
        assert msg is not None and msg.kind == "config"
        doomed.close()  # its process dies, before it is ready
        ctx.term()
        t0 = time.monotonic()
        time.sleep(1.0)  # its connection is seen down; a new process for it is refused
        _, said = release(again).communicate(timeout=30)
        assert again.returncode == 2 and one_line(said, 200) == (
            "p2pfl: error: node 1: the launcher refused this node: node 1 was lost after the "
            "run sent its configs, and cannot join again before the start; the run fails "
            "(start it again)")
        _, err = launcher.communicate(timeout=40)
        assert launcher.returncode == 1 and time.monotonic() - t0 < 3 + 10
        assert err.strip().splitlines()[-1] == (
            "p2pfl: error: node 1 lost its connection to the launcher for 3 s during start-up")
        assert all(p.wait(timeout=30) != 0 for p in others)  # stopped, not run
    finally:
        for proc in (launcher, *others, again):
            proc.kill()


def test_a_node_of_another_version_is_refused_and_told(tmp_path):
    """The join says which p2pfl the node runs; another one than the launcher's is refused
    before its spec is sent (a spec of another version may mean something else).  The
    launcher's time-out says so too: a quiet run does not log the refusal."""
    import p2pfl

    addr = f"tcp://127.0.0.1:{free_port()}"
    code = ("import sys, p2pfl.worker as w; w.__version__ = '0.0.9'; "
            "from p2pfl.cli import main; sys.exit(main(sys.argv[1:]))")
    why = f"it runs p2pfl 0.0.9, the launcher p2pfl {p2pfl.__version__}; every host of a run "
    # the node first: its join waits in its queue until the launcher listens
    node = subprocess.Popen([sys.executable, "-c", code, "node", "--connect", addr, "--id", "2",
                             "--host", "127.0.0.1", "--start-timeout", "30"], cwd=ROOT,
                            text=True, stderr=subprocess.PIPE)
    launcher = _listening_launcher(tmp_path, addr, start_timeout=4)
    try:
        _, err = node.communicate(timeout=60)
        assert node.returncode == 2
        assert one_line(err, 200) == ("p2pfl: error: node 2: the launcher refused this node: "
                                      f"{why}needs the same one")
        assert launcher.wait(timeout=30) == 1
        last = launcher.stderr.read().strip().splitlines()[-1]
        assert last.startswith("p2pfl: error: 4 node(s) not joined after 4 s: [0, 1, 2, 3]; "
                               f"1 join(s) refused, the first from id 2: {why}"), last
    finally:
        for proc in (node, launcher):
            proc.kill()


def test_a_node_that_cannot_bind_tells_the_launcher_at_once():
    """The launcher's own node processes: a failed bind is an error message, not a hang."""
    ctx = zmq.Context()
    launcher = Endpoint(ctx, LAUNCHER, "tcp://127.0.0.1:*")
    try:
        code = ("from p2pfl.worker import process_main; "
                f"process_main({launcher.address!r}, 0, 'tcp', {NOWHERE!r}, '/tmp', 30.0)")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                              capture_output=True, timeout=30)
        assert proc.returncode == 1 and time.monotonic() - t0 < 15
        assert "Traceback" not in proc.stderr
        msg = launcher.recv(5.0)
        assert msg is not None and msg.kind == "error" and msg.src == 0
        assert msg.meta["reason"].startswith(f"cannot bind tcp://{NOWHERE}:*: ")
    finally:
        launcher.close(linger=0)
        ctx.term()


def test_a_failed_bind_leaves_no_socket_open():
    """An endpoint that cannot bind closes what it opened: the context still ends."""
    ctx = zmq.Context()
    with pytest.raises(zmq.ZMQError):
        Endpoint(ctx, 0, f"tcp://{NOWHERE}:*", control="tcp://127.0.0.1:*")
    ending = threading.Thread(target=ctx.term, daemon=True)
    ending.start()
    ending.join(5.0)
    assert not ending.is_alive(), "a socket was left open"


def test_tcp_address_forms():
    assert tcp_address("tcp://10.0.0.1:65535", "--x") == ("10.0.0.1", 65535)
    assert tcp_address("tcp://*:*", "--x", wildcard=True) == ("*", None)
    for bad in ("tcp://h:*", "tcp://:5", "tcp://h:5x", "tcp://h:-5", "udp://h:5",
                "tcp://h:٥", "tcp://*:5"):  # * binds every interface; no one connects to it
        with pytest.raises(UsageError, match="expected tcp://HOST:PORT"):
            tcp_address(bad, "--x")


def test_advertise_forms():
    for good in ("localhost", "HOST-B", "node_1.cluster.local", "10.1.2.3", "a" * 63):
        check_advertise(good)
    for bad in ("", "bad host", "h:5555", "tcp://h", "*", "-h", "h-", "a..b", "999.1.1.1",
                "01.2.3.4", "::1", "héte", "h\n", "a" * 64):
        with pytest.raises(UsageError, match="expected a host name or IPv4 address"):
            check_advertise(bad)


def test_mixing_help_lists_every_accepted_form():
    for cmd in ("cluster", "topology"):
        res, _ = run(cmd, "--help")
        assert res.returncode == 0
        text = " ".join(res.stdout.split())
        for form in ("metropolis", "uniform", "weight", "attr:NAME"):
            assert form in text.split("--mixing MIXING ", 1)[1][:200], (cmd, form)


@pytest.mark.parametrize("option, words", [
    ({"host": NOWHERE}, "not an address of this machine"),
    pytest.param({"host": NOWHERE, "backend": "ray"}, "not an address of this machine",
                 marks=pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                          reason="needs the ray extra (pip install -e '.[ray]')")),
    ({"listen": "tcp://127.0.0.1:70000"}, "PORT 1-65535"),
])
def test_run_cluster_checks_addresses_before_anything_starts(tmp_path, option, words):
    import p2pfl

    with pytest.raises(UsageError, match=words):
        p2pfl.run_cluster("ring:3", rounds=1, quiet=True, out=str(tmp_path), **option)
    assert not os.listdir(tmp_path)  # not even config.json: the run folder is untouched


def test_a_node_bound_to_every_interface_advertises_where_it_is_reached(tmp_path):
    """With the default --host 0.0.0.0 and no --advertise, a node told its peers
    tcp://0.0.0.0:PORT: on another host a peer would have connected to itself."""
    from tests._remote import run_to_the_end

    addr = f"tcp://127.0.0.1:{free_port()}"
    run_to_the_end([*CLI, "cluster", "--topology", "ring:2", "--rounds", "2", "--listen", addr,
                    "-q", "--out", str(tmp_path)],
                   [[*CLI, "node", "--connect", addr, "--id", str(i)] for i in range(2)])
    rows = json.loads((tmp_path / "nodes.json").read_text())
    assert all(r["address"].startswith("tcp://127.0.0.1:") for r in rows), rows
    assert all(r["control"].startswith("tcp://127.0.0.1:") for r in rows), rows
