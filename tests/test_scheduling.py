"""Node processes run under the scheduling policy ``--cpu-policy`` names (batch by
default); the launcher's own process, which may be a user's, is left as it is."""

import json
import multiprocessing as mp
import os
import threading
import time

import pytest

from p2pfl.errors import ConfigError
from p2pfl.scheduling import set_cpu_policy
from p2pfl.spec import RuntimeSpec
from tests._forked import CLI, Forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
linux = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH") or not os.path.isdir("/proc/self/task"),
                           reason="scheduling policies are Linux's")


def _policies(pid: int) -> list:
    """The policy of each thread of ``pid`` still there: a thread just joined can stay
    listed in ``/proc`` a moment after it is gone (ProcessLookupError; seen in CI)."""
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            out.append(os.sched_getscheduler(int(t)))
        except ProcessLookupError:
            pass
    return out


def _child(policy, out) -> None:
    early = threading.Thread(target=time.sleep, args=(1.0,))
    early.start()  # a thread that exists before the call is switched too
    done = set_cpu_policy(policy)
    later = []
    t = threading.Thread(target=lambda: later.append(os.sched_getscheduler(0)))
    t.start()  # and one started after it inherits the policy
    t.join()
    out.put((done, _policies(os.getpid()), later[0]))
    early.join()


@linux
@pytest.mark.parametrize("policy, want", [("batch", "SCHED_BATCH"), ("normal", "SCHED_OTHER")])
def test_every_thread_of_the_process_takes_the_policy(policy, want):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    if policy == "normal":  # start from batch, so that normal is a change
        proc = ctx.Process(target=lambda: (set_cpu_policy("batch"), _child("normal", out)))
    else:
        proc = ctx.Process(target=_child, args=(policy, out))
    proc.start()
    done, threads, later = out.get(timeout=30)
    proc.join(30)
    code = getattr(os, want)
    assert done and len(threads) >= 2 and set(threads) == {code} and later == code


def test_a_policy_not_known_is_refused():
    with pytest.raises(ValueError, match="batch"):
        set_cpu_policy("fast")
    with pytest.raises(ConfigError, match="cpu_policy"):  # a spec from the wire
        RuntimeSpec(rounds=1, round_timeout=1.0, start_timeout=1.0, cpu_policy="realtime")


@linux
@pytest.mark.parametrize("flags, want", [((), "SCHED_BATCH"),
                                         (("--cpu-policy", "normal"), "SCHED_OTHER")])
def test_node_processes_run_under_the_policy_and_the_launcher_is_left_alone(tmp_path, flags,
                                                                            want):
    out = tmp_path / "run"
    launcher = Forked(
        [*CLI, "cluster", "--topology", "ring:3", "--dataset",
         "digits", "--model", "mlp:8", "--local-steps", "0", "--rounds", "100000",
         "--no-consensus", "-q", "--out", str(out), *flags], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").stat().st_size:
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        pids = [n["pid"] for n in json.loads((out / "nodes.json").read_text())]
        seen = {pid: set(_policies(pid)) for pid in pids}
        mine = os.sched_getscheduler(launcher.pid)
    finally:
        launcher.kill()
        launcher.wait(30)
    assert len(pids) == 3
    assert all(s == {getattr(os, want)} for s in seen.values()), seen
    assert mine == os.sched_getscheduler(0)  # the launcher runs as it was started
