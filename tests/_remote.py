"""A multi-host run on loopback: a listening launcher and `p2pfl node` processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time

from p2pfl.addresses import free_port, listening
from tests._forked import CLI, Forked, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cluster_summary(out, *flags) -> dict:
    """Run ``p2pfl cluster FLAGS -q --out OUT`` (it must exit 0, printing OUT alone)
    and return its ``summary.json``.  The launcher is the command's code in this process
    (:func:`tests._inproc.cli_here`: a second interpreter costs a second of ``import
    torch``); its nodes are processes of their own, forked from it as always."""
    from tests._inproc import cli_here

    res = cli_here("cluster", *map(str, flags), "-q", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{out}\n"  # all that a quiet run prints: its folder
    with open(os.path.join(str(out), "summary.json")) as fh:
        return json.load(fh)



def records(out) -> list:
    """The complete records of ``out``/metrics.jsonl so far (none before it exists)."""
    try:
        with open(os.path.join(str(out), "metrics.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]
    except OSError:
        return []


def listening_launcher(out, *flags, quiet: bool = True) -> tuple:
    """`p2pfl cluster --dataset digits --listen ADDR FLAGS --out OUT` (``-q`` unless not
    ``quiet``: then what it logs is read from its stderr) on a free port, returned with
    ADDR once it listens."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    proc = Forked([*CLI, "cluster", "--dataset", "digits", "--listen", addr, *map(str, flags),
                   *(["-q"] if quiet else []), "--out", str(out)], cwd=ROOT,
                  stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL if quiet else subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not listening(port):
        assert proc.poll() is None and time.monotonic() < deadline, "it never listened"
        time.sleep(0.05)
    return proc, addr


def read_until(proc: subprocess.Popen, words: str) -> str:
    """``proc``'s stderr up to and including the first line holding ``words``."""
    said = ""
    for line in proc.stderr:
        said += line
        if words in line:
            return said
    raise AssertionError(f"never said {words!r} (rc {proc.wait()}): {said}")


def remote_nodes(addr: str, count: int, *flags) -> list:
    """``count`` `p2pfl node --connect ADDR --id I FLAGS` processes (stderr: a text pipe)."""
    return [Forked([*CLI, "node", "--connect", addr, "--id", str(i), "--host", "127.0.0.1",
                    *map(str, flags)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            for i in range(count)]


def spare_node(addr: str, i: int, *flags, **popen) -> subprocess.Popen:
    """`p2pfl node --connect ADDR --id I --host 127.0.0.1 FLAGS`, held until
    :func:`release`: a node started again by hand joins at once."""
    return Forked([*CLI, "node", "--connect", addr, "--id", str(i), "--host", "127.0.0.1",
                   *map(str, flags)], hold=True, cwd=ROOT, stdin=subprocess.PIPE, **popen)


def start(cmd: list, **popen) -> subprocess.Popen:
    """``cmd`` started: forked if it is a p2pfl command, else a process of its own (``ip
    netns exec ...``)."""
    return Forked(cmd, **popen) if cmd[:3] == CLI else subprocess.Popen(cmd, **popen)


def release(proc: subprocess.Popen) -> subprocess.Popen:
    """Start a :func:`spare_node`."""
    os.write(proc.stdin.fileno(), b"\n")
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() would flush it
    return proc


@contextlib.contextmanager
def remote_cluster(out, count: int, *flags, node_flags=(), quiet: bool = True):
    """A :func:`listening_launcher` (``FLAGS``) and ``count`` :func:`remote_nodes`
    (``node_flags``): ``(launcher, addr, nodes)``, every process killed on the way out."""
    launcher, addr = listening_launcher(out, *flags, quiet=quiet)
    nodes: list = []
    try:
        nodes.extend(remote_nodes(addr, count, *node_flags))
        yield launcher, addr, nodes
    finally:
        for p in [launcher, *nodes]:
            p.kill()


def await_zeromq(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``proc`` has started ZeroMQ's I/O thread (its imports are done: on a
    loaded machine they take seconds more than on a quiet one), and then a little more."""
    deadline = time.monotonic() + timeout
    tasks = f"/proc/{proc.pid}/task"
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "no ZeroMQ thread"
        names = []
        for tid in os.listdir(tasks):
            try:
                with open(os.path.join(tasks, tid, "comm")) as fh:
                    names.append(fh.read())
            except OSError:
                pass  # a thread that ended meanwhile
        if any(n.startswith("ZMQbg/IO") for n in names):
            break
        time.sleep(0.05)
    time.sleep(0.5)


def await_records(out, count: int, launcher, timeout: float = 60) -> None:
    """Wait until ``out`` holds ``count`` records, while ``launcher`` runs."""
    deadline = time.monotonic() + timeout
    while len(records(out)) < count:
        assert launcher.poll() is None and time.monotonic() < deadline, "no records"
        time.sleep(0.02)


def run_to_the_end(launcher: list, nodes: list, timeout: float = 120,
                   same_host: bool = True) -> None:
    """Start the launcher and, once it listens, the node commands; assert that all of
    them exit 0.  (Nodes of the same host started at once bind their own ports
    meanwhile, and one of those could be the port picked for the launcher; nodes in
    other network namespaces, ``same_host=False``, cannot take it, nor can we see it.)"""
    proc = start(launcher, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    port = int(launcher[launcher.index("--listen") + 1].rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while (same_host and not listening(port) and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.05)
    procs = [start(cmd, cwd=ROOT) for cmd in nodes]
    try:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        assert [p.wait(timeout=60) for p in procs] == [0] * len(procs)
    finally:
        for p in [proc, *procs]:
            p.kill()


def remote_run(tmp_path, secure: bool = False, nodes: int = 3) -> tuple:
    """ring:N, 3 rounds, every socket TCP; with ``secure``, keys from `p2pfl keys generate`.
    Returns (summary, the TCP ports of the launcher and of every node)."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    keys = tmp_path / "keys"
    flags = ["cluster", "--topology", f"ring:{nodes}", "--rounds", "3", "--listen", addr, "-q",
             "--out", str(tmp_path / "run")]
    if secure:
        run([*CLI, "keys", "generate", str(keys), "--nodes", str(nodes)], cwd=ROOT, check=True,
            capture_output=True)
        flags += ["--keys", str(keys)]
    run_to_the_end([*CLI, *flags],
                   [[*CLI, "node", "--connect", addr,
                     "--host", "127.0.0.1",
                     *(["--key", str(keys / f"{i}.key_secret")] if secure
                       else ["--id", str(i)])] for i in range(nodes)])
    rows = json.loads((tmp_path / "run" / "nodes.json").read_text())
    ports = {int(addr.rsplit(":", 1)[1])}
    ports |= {int(n[k].rsplit(":", 1)[1]) for n in rows for k in ("address", "control")}
    return json.loads((tmp_path / "run" / "summary.json").read_text()), ports
