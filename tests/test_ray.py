"""``--backend ray``: node processes as Ray actors on a two-node Ray cluster.

The cluster is real: a Ray head and a second Ray node, each a ``ray start``
process of its own (with its raylet, object store and workers), joined with a
token made for this test.  Sixteen p2pfl nodes asking one CPU each do not fit on
one Ray node of eight, so Ray must place them on both; they then talk to each
other over ZeroMQ TCP on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests._remote import ROOT, free_port

# one Ray cluster (the module fixture) for all of them: the same test worker runs them all
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")


def _ray_env() -> dict:
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                RAY_AUTH_TOKEN=secrets.token_hex(32))


def _alive_nodes(address: str, env: dict) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level=40); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    return int(out.stdout.strip() or 0)


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head and a second Ray node (8 CPUs each); killed, with all their
    processes, at the end."""
    env, port = _ray_env(), free_port()
    address = f"127.0.0.1:{port}"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    common = ["--num-cpus=8", "--block", "--disable-usage-stats"]
    procs = [subprocess.Popen([ray_cli, "start", "--head", f"--port={port}",
                               "--include-dashboard=false", *common], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 90
        while _alive_nodes(address, env) < 1:
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        procs.append(subprocess.Popen([ray_cli, "start", f"--address={address}", *common],
                                      env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while _alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join"
            time.sleep(1)
        yield address, env
    finally:
        for p in reversed(procs):  # raylets, stores and workers are in each group
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        _forget(address)


def _forget(address: str) -> None:
    """Remove the address `ray start` leaves for a later ``ray.init()`` to find (a
    killed head cannot remove it itself)."""
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(path) as fh:
            if fh.read().strip().endswith(":" + address.rsplit(":", 1)[1]):
                os.remove(path)
    except OSError:
        pass


def _p2pfl(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_sixteen_nodes_across_two_ray_nodes(ray_cluster, tmp_path):
    address, env = ray_cluster
    out = tmp_path / "run"
    proc = _p2pfl(env, "--backend", "ray", "--ray-address", address, "--node-cpus", "1",
                  "--host", "127.0.0.1", "--topology", "ring:16", "--dataset", "digits",
                  "--rounds", "12", "--save-models", "-q", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # every actor's final model came back to the launcher's folder, from both Ray nodes
    assert summary["models_saved"] == 16
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(
        f"node-{i}.pt" for i in range(16))
    rows = json.loads((out / "nodes.json").read_text())
    assert summary["backend"] == "ray"
    assert summary["ray_nodes"] == 2  # 16 x 1 CPU cannot fit on one Ray node of 8
    assert len({r["ray_node"] for r in rows}) == 2
    assert all(r["state"] == "done" for r in rows)
    assert all(r["address"].startswith("tcp://127.0.0.1:") for r in rows)
    assert summary["node_processes"] == 16 and summary["failed_nodes"] == {}
    assert summary["misses_total"] == 0
    assert summary["accuracy_mean"] > 0.6  # twelve rounds on a ring of 16 learn


def _sigterm_once(proc, ready, timeout: float) -> None:
    """SIGTERM to the launcher ``proc`` once ``ready()``; it must exit 143."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()


def test_sigterm_stops_a_ray_run_cleanly(ray_cluster, tmp_path):
    """ray.init puts in a SIGTERM handler of its own that exits at once: the run left
    no summary and exited 15, where a local run stops its nodes and exits 143."""
    address, env = ray_cluster
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--backend", "ray",
                             "--ray-address", address, "--node-cpus", "1", "--host",
                             "127.0.0.1", "--topology", "ring:4", "--rounds", "100000",
                             "--eval-every", "1000", "-q", "--out", str(out)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    _sigterm_once(proc, lambda: (out / "metrics.jsonl").exists()
                  and (out / "metrics.jsonl").stat().st_size, 120)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["node_processes"] == 4


def test_nodes_that_do_not_fit_are_refused_before_any_starts(ray_cluster, tmp_path):
    address, env = ray_cluster
    proc = _p2pfl(env, "--backend", "ray", "--ray-address", address, "--node-cpus", "2",
                  "--topology", "ring:16", "-q", "--out", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert os.listdir(tmp_path / "run") == []  # no half-written run (config, empty metrics)
    assert "16 nodes x 2 CPU need 32 CPUs; the Ray cluster has 16" in proc.stderr


def test_nodes_that_fit_the_total_but_not_the_hosts_are_refused(ray_cluster, tmp_path):
    """Two hosts of 8 CPUs place two nodes of 3 CPUs each: a fifth passed the total's
    check (15 of 16) and waited out the start time-out (a helper's audit)."""
    address, env = ray_cluster
    proc = _p2pfl(env, "--backend", "ray", "--ray-address", address, "--node-cpus", "3",
                  "--topology", "ring:5", "-q", "--out", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert ("5 nodes x 3 CPU: the Ray cluster's hosts (8, 8 CPUs) place 4 at once (lower "
            "--node-cpus)") in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


_HOG = ("import sys, time, ray\n"
        "ray.init(address=sys.argv[1], logging_level=40, log_to_driver=False)\n"
        "@ray.remote(num_cpus=6)\n"
        "class Hog:\n"
        "    def ping(self):\n"
        "        return 1\n"
        "hogs = [Hog.remote() for _ in range(2)]\n"  # 6 of the 8 CPUs of each host
        "ray.get([h.ping.remote() for h in hogs])\n"
        "print('held', flush=True)\n"
        "time.sleep(300)\n")


def test_nodes_that_only_cpus_another_job_holds_would_place_are_refused(ray_cluster,
                                                                        tmp_path):
    """Another job holds 12 of the 16 CPUs (6 of each host's 8): 5 nodes of 1 CPU passed
    the totals' checks and waited out the start time-out (a helper's audit)."""
    address, env = ray_cluster
    hog = subprocess.Popen([sys.executable, "-c", _HOG, address], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        import select

        assert select.select([hog.stdout], [], [], 120)[0], "the other job never held CPUs"
        assert hog.stdout.readline().strip() == "held"
        proc = _p2pfl(env, "--backend", "ray", "--ray-address", address, "--node-cpus", "1",
                      "--topology", "ring:5", "-q", "--out", str(tmp_path / "run"),
                      timeout=120)
    finally:
        hog.kill()
        hog.wait(30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "5 nodes x 1 CPU need 5 CPUs; 4 are free on the Ray cluster now" in proc.stderr


def test_a_ray_run_reads_data_where_the_launcher_found_it(tmp_path, monkeypatch):
    """A relative npz: path (or --data-dir) was read in each Ray node's own working
    directory: the launcher checked the file, and every node failed to find it."""
    from p2pfl.config_files import from_sources

    monkeypatch.chdir(tmp_path)
    cfg = from_sources(None, dict(backend="ray", dataset="npz:data/own.npz"))
    assert cfg.dataset == f"npz:{tmp_path}/data/own.npz"
    cfg = from_sources(None, dict(backend="ray", dataset="mnist", data_dir="cache"))
    assert cfg.dataset == "mnist" and cfg.data_dir == str(tmp_path / "cache")


def test_a_local_instance_that_is_too_small_is_one_line(tmp_path):
    """A Ray started for the run said, on every run, that it turned on token
    authentication (its default): a line of Ray's before ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = _p2pfl(env, "--backend", "ray", "--node-cpus", "64", "--topology", "ring:4", "-q",
                  "--out", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("p2pfl: error: 4 nodes x 64 CPU need 256 CPUs; the Ray "
                                  "cluster has ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("flags, message", [
    (["--ray-address", "127.0.0.1:1"], "--ray-address needs --backend ray"),
    (["--node-gpus", "1"], "--node-gpus needs --backend ray"),
    (["--backend", "ray", "--in-process"], "does not combine with --in-process"),
    (["--backend", "ray", "--secure"], "does not combine with --secure"),
    (["--backend", "ray", "--node-cpus", "0"], "--node-cpus must be at least 0.0001"),
    (["--backend", "ray", "--node-cpus", "1e-9"], "--node-cpus must be at least 0.0001"),
    (["--backend", "ray", "--node-cpus", "inf"], "and finite"),  # passed --dry-run
    (["--backend", "ray", "--ray-address", "ray://127.0.0.1:10001"], "ray:// is Ray Client"),
    (["--backend", "ray", "--host", "0.0.0.0"], "cannot reach that address"),  # advertised
    (["--backend", "mpi"], "backend"),
])
def test_bad_ray_flags_exit_2(flags, message, tmp_path):
    proc = _p2pfl(os.environ, *flags, "-q", "--out", str(tmp_path / "run"), timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("address", ["127.0.0.1:{port}"])
def test_an_address_where_no_head_listens_is_refused_at_once(address, tmp_path):
    """Ray retried such an address for minutes, a warning every few seconds (a
    command with a mistyped port ran until killed after two)."""
    address = address.format(port=free_port())  # nothing listens there
    started = time.monotonic()
    proc = _p2pfl(os.environ, "--backend", "ray", "--ray-address", address, "-q",
                  "--out", str(tmp_path / "run"), timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"--ray-address {address}: nothing accepts connections there" in proc.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "run" / "nodes.json").exists()  # no node was placed


def test_auto_naming_a_head_that_is_gone_is_refused_at_once(tmp_path):
    """``auto`` connects where RAY_ADDRESS (or the last ``ray start``) says; a head that
    ended there left Ray retrying for minutes too."""
    gone = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = _p2pfl(dict(os.environ, RAY_ADDRESS=gone), "--backend", "ray", "--ray-address",
                  "auto", "-q", "--out", str(tmp_path / "run"), timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == (f"p2pfl: error: --ray-address auto: Ray would connect to {gone} "
                           "(from RAY_ADDRESS), where nothing accepts connections (connection "
                           "refused); is a Ray head running?\n")
    assert time.monotonic() - started < 30


def test_a_ray_session_the_caller_started_is_used_and_kept(ray_cluster, tmp_path):
    """With ray.init() done by the caller, --backend ray raised Ray's own 'called
    ray.init twice'; actor names then also collided between two runs of one process.
    A finished run's actors held their CPUs until Ray collected their handles, and the
    next run's nodes waited for them (benchmarks/ray_session.py: 19.0 s to join, not 2).
    The caller's session joins the module's cluster: a local instance of its own cost
    the suite its start-up (about 8 s); ``node_cpus`` 4 makes each run's three nodes
    take 12 of the two Ray nodes' 16 CPUs: the second run needs the first's back."""
    address, env = ray_cluster
    code = ("import time, ray, p2pfl\n"
            f"ray.init(address={address!r}, logging_level=40)\n"
            "total = ray.cluster_resources()['CPU']\n"
            "for k in range(2):\n"
            f"    r = p2pfl.run_cluster('ring:3', backend='ray', rounds=2, quiet=True,"
            f" node_cpus=4, host='127.0.0.1', out={str(tmp_path)!r} + f'/run{{k}}')\n"
            "    assert r.summary['failed_nodes'] == {}, r.summary['failed_nodes']\n"
            "    t = time.monotonic()\n"  # a kill is asynchronous
            "    while ray.available_resources().get('CPU', 0) < total and "
            "time.monotonic() - t < 5:\n"
            "        time.sleep(0.05)\n"
            "    print('CPUs free:', ray.available_resources().get('CPU', 0) == total)\n"
            "print('session kept:', ray.is_initialized())\n"
            "ray.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "session kept: True" in out.stdout
    assert out.stdout.count("CPUs free: True") == 2, out.stdout


def test_a_node_actor_that_cannot_start_says_why(ray_cluster, tmp_path):
    """A host without p2pfl failed its node actor before the node ran: the launcher
    said only "exited during start-up".  Ray's error is read back: its last line
    names the missing module.  (A class importable here and not on the workers, as
    p2pfl.ray_backend is on a host without p2pfl.)"""
    address, env = ray_cluster
    (tmp_path / "onlyhere.py").write_text("class Node:\n    def run(self):\n        return 0\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "import ray, onlyhere\n"
            "from p2pfl.ray_backend import RayRunner\n"
            f"ray.init(address={address!r}, logging_level=40, log_to_driver=False)\n"
            "actor = ray.remote(onlyhere.Node).options(num_cpus=0.01).remote()\n"
            "r = RayRunner(ray, actor, actor.run.remote())\n"
            "r.join(60)\n"
            "print(r.is_alive(), r.error())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "False ModuleNotFoundError: No module named 'onlyhere'", \
        out.stdout + out.stderr[-2000:]


def _descendants_named(pid: int, word: str) -> list:
    """Processes under ``pid`` whose command line holds ``word``."""
    kids, found = {pid}, []
    for _ in range(4):  # a few levels: the launcher, Ray's helpers, their children
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except (OSError, IndexError, ValueError):
                continue
            if ppid in kids:
                kids.add(int(entry))
                if word.encode() in cmd:
                    found.append(int(entry))
    return found


def test_sigterm_while_ray_starts_stops_the_run_as_any_sigterm(tmp_path):
    """ray.init's own SIGTERM handler is in place while it starts a local instance: a
    SIGTERM then exited 15 at once, with no word and no summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--backend", "ray",
                             "--topology", "ring:3", "--rounds", "100000", "-q", "--out",
                             str(out)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    _sigterm_once(proc, lambda: _descendants_named(proc.pid, "gcs_server"), 60)  # Ray starts
    assert proc.stderr.read().startswith("p2pfl: terminated; all nodes stopped")


def test_a_stopped_ray_node_does_not_hold_the_run(ray_cluster, tmp_path):
    """A node actor's process stopped (SIGSTOP) once the others had finished held the
    run for the launcher's 120 s silence limit: /proc was read for local processes
    only.  A task on the node's Ray host now reads it."""
    address, env = ray_cluster
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--backend", "ray",
                             "--ray-address", address, "--node-cpus", "1", "--host",
                             "127.0.0.1", "--topology", "ring:4", "--dataset", "digits",
                             "--rounds", "15", "--round-timeout", "1", "--slowdown", "20",
                             "-q", "--out", str(out)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    # slowed, so that the stop lands mid-run: 15 fast rounds once ended before it, in a CI
    # run, and nothing failed
    pid = None
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").exists()
                   and len((out / "metrics.jsonl").read_text().splitlines()) >= 8):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        rows = json.loads((out / "nodes.json").read_text())
        pid = next(r["pid"] for r in rows if r["id"] == 1)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert proc.wait(timeout=100) == 0, proc.stderr.read()
        took = time.monotonic() - stopped_at
    finally:
        proc.kill()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["failed_nodes"]) == ["1"], summary["failed_nodes"]
    assert "stopped" in summary["failed_nodes"]["1"]
    assert took < 40, f"{took:.1f} s after the stop"


def test_a_server_runs_coordinator_is_placed_on_the_launchers_host(ray_cluster, tmp_path):
    """Its checkpoint is a file on the host it runs on: placed on another host, a
    coordinator restarted elsewhere found none and started over.  Four actors of four
    CPUs fill both Ray nodes of eight; the coordinator, placed last, went where room was
    left."""
    address, env = ray_cluster
    probe = subprocess.run([sys.executable, "-c", (
        f"import ray; ray.init(address={address!r}, logging_level=40); "
        "print(ray.get_runtime_context().get_node_id())")], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60)
    home = probe.stdout.strip()
    out = tmp_path / "run"
    proc = _p2pfl(env, "--mode", "fedavg", "--nodes", "3", "--backend", "ray",
                  "--ray-address", address, "--node-cpus", "4", "--host", "127.0.0.1",
                  "--dataset", "digits", "--rounds", "1", "-q", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "nodes.json").read_text())
    assert len({r["ray_node"] for r in rows}) == 2  # both hosts full
    assert [r["ray_node"] for r in rows if r["label"] == "coordinator"] == [home]
