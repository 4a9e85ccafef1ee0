"""Fault paths, timed: a worker killed or stopped, a node stopped, runs stopped early.

    python benchmarks/faults.py [--source DIR] [--only NAME ...] [--tag after]

Each scenario is a real ``p2pfl cluster`` run on digits; a node process gets a real
SIGKILL or SIGSTOP once the run has reached a given point.  It prints, and writes to
``benchmarks/results/faults_<tag>.json``: the seconds from the signal to the end of
the run, the time-outs the coordinator recorded for the faulty worker, and the byte
totals of ``summary.json`` that must agree.  ``--source DIR`` runs another checkout
of p2pfl (e.g. a ``git worktree`` of an older commit) to measure the same scenarios
before a change.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)

from p2pfl.addresses import free_port, listening  # noqa: E402
from _results import coordinator_rounds as _coordinator_rounds  # noqa: E402
from _results import records as _records  # noqa: E402


def _newest(out: str, label) -> int | None:
    try:
        with open(os.path.join(out, "nodes.json")) as fh:
            return next(n["pid"] for n in json.load(fh) if n["label"] == label)
    except (OSError, ValueError, StopIteration):
        return None


#: name -> (flags, steps).  A step: ("when", records -> bool), ("signal", node label,
#: signal), ("restarted", node label): its pid changed, ("sleep", s), or ("interrupt",):
#: SIGINT to the launcher.  The clock of ``after_signal_s`` starts at the last signal.
SCENARIOS = {
    "killed_worker": (["--mode", "fedavg", "--nodes", "4", "--rounds", "30",
                       "--round-timeout", "5"],
                      [("when", lambda r: _coordinator_rounds(r) >= 3),
                       ("signal", 2, signal.SIGKILL)]),
    "stopped_worker": (["--mode", "fedavg", "--nodes", "3", "--rounds", "12",
                        "--round-timeout", "2"],
                       [("when", lambda r: _coordinator_rounds(r) >= 2),
                        ("signal", 1, signal.SIGSTOP)]),
    "stopped_gossip_node": (["--topology", "ring:4", "--rounds", "15", "--round-timeout", "1"],
                            [("when", lambda r: len(r) >= 8), ("signal", 1, signal.SIGSTOP)]),
    "fedavg_target": (["--mode", "fedavg", "--nodes", "4", "--rounds", "200",
                       "--target-accuracy", "0.8"], []),
    "gossip_target": (["--topology", "ring:4", "--rounds", "300", "--target-accuracy", "0.85"],
                      []),
    "gossip_churn": (["--topology", "ring:6", "--rounds", "60", "--churn", "1.5:0.5:1",
                      "--round-timeout", "2"], []),
    "async_choco_restarted_twice": (
        ["--topology", "ring:5", "--schedule", "async", "--algorithm", "choco",
         "--compression", "topk:0.1", "--rounds", "300", "--round-timeout", "3",
         "--restart", "on-failure"],
        [("when", lambda r: len(r) >= 15), ("signal", 2, signal.SIGKILL), ("restarted", 2),
         ("when", lambda r: sum(x["node"] == 2 for x in r) >= 8),
         ("signal", 2, signal.SIGKILL)]),
    # nodes started apart with `p2pfl node --connect` (as on other hosts): no process
    # of theirs is the launcher's to watch
    "killed_remote_node": (
        ["--topology", "ring:3", "--rounds", "150", "--round-timeout", "1", "--listen",
         "LISTEN"],
        [("when", lambda r: len(r) >= 9), ("signal", 1, signal.SIGKILL)]),
    "interrupt_with_a_stopped_node": (
        ["--topology", "ring:4", "--rounds", "3000", "--round-timeout", "3"],
        [("when", lambda r: len(r) >= 12), ("signal", 1, signal.SIGSTOP), ("sleep", 1.0),
         ("interrupt",)]),
}


def _play(steps: list, out: str, proc) -> tuple:
    """Carry out the steps; the time of the last signal, and the pids stopped."""
    t_signal, stopped = None, []
    for step in steps:
        deadline = time.monotonic() + 120
        if step[0] == "sleep":
            time.sleep(step[1])
            continue
        if step[0] == "interrupt":
            proc.send_signal(signal.SIGINT)
            t_signal = time.monotonic()
            continue
        old = _newest(out, step[1]) if step[0] == "restarted" else None
        while True:
            if step[0] == "signal" or (step[0] == "when" and step[1](_records(out))) or (
                    step[0] == "restarted" and _newest(out, step[1]) not in (old, None)):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the run ended first, or never got to {step}")
            time.sleep(0.02)
            if step[0] == "restarted" and old is None:
                old = _newest(out, step[1])
        if step[0] == "restarted":
            continue
        if step[0] == "signal":
            pid = _newest(out, step[1])
            os.kill(pid, step[2])
            t_signal = time.monotonic()
            if step[2] == signal.SIGSTOP:
                stopped.append(pid)
    return t_signal, stopped


def run(name: str, source: str) -> dict:
    flags, steps = SCENARIOS[name]
    victims = {s[1] for s in steps if s[0] == "signal"}
    with tempfile.TemporaryDirectory(prefix="p2pfl-faults-") as tmp:
        out = os.path.join(tmp, "run")
        address = f"tcp://127.0.0.1:{free_port()}" if "LISTEN" in flags else None
        cmd = [sys.executable, "-m", "p2pfl.cli", "cluster", "--dataset", "digits", "-q",
               "--out", out, *[address if f == "LISTEN" else f for f in flags]]
        env = dict(os.environ, PYTHONPATH=source)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        stopped, remote = [], []
        try:
            if address is not None:
                remote = _start_remote(address, flags, source, env)
            t_signal, stopped = _play(steps, out, proc)
            proc.wait(timeout=600)
        finally:
            for p in remote:
                p.kill()
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            proc.kill()
        t_end = time.monotonic()
        try:
            with open(os.path.join(out, "summary.json")) as fh:
                s = json.load(fh)
        except OSError:  # an interrupted run writes none
            s = {}
        recs = _records(out)
        stale = [pid for pid in stopped if _alive(pid)]
    coord = [r for r in recs if r.get("role") == "coordinator"]
    codes = [code for r in coord for w, code in r.get("failed", []) if w in victims]
    last = {}
    for r in recs:
        if r.get("accuracy") is not None:
            last[r["node"]] = r["accuracy"]
    row = {
        "scenario": name, "command": "p2pfl cluster --dataset digits " + " ".join(flags),
        "steps": [[str(x) if callable(x) else x for x in st[:2]] for st in steps
                  if st[0] != "when"],
        "exit": proc.returncode, "run_s": round(t_end - t0, 1),
        "after_signal_s": None if t_signal is None else round(t_end - t_signal, 2),
        "stopped_processes_left": len(stale),
        "coordinator_timeouts": codes.count("timeout"), "misses_total": s.get("misses_total"),
        "failed_nodes": s.get("failed_nodes"), "restarts": s.get("restarts"),
        "target_reached_at_round": s.get("target_reached_at_round"),
        "last_coordinator_round": coord[-1]["round"] if coord else None,
        "bytes_sent_total": s.get("bytes_sent_total"),
        "bytes_sent_counted_by_nodes": s.get("bytes_sent_counted_by_nodes"),
        "bytes_received_total": s.get("bytes_received_total"),
        "records_bytes_sent": sum(r.get("bytes_sent") or 0 for r in recs),
        "accuracy_mean": s.get("accuracy_mean"),
        "final_accuracy_of_signalled": {str(v): last.get(v) for v in sorted(victims, key=str)},
    }
    if coord:
        rounds = [r for r, _ in s.get("global_accuracy_per_round", [])]
        row["global_accuracy_rounds_repeated"] = len(rounds) - len(set(rounds))
    return row


def _start_remote(address: str, flags: list, source: str, env: dict) -> list:
    """``p2pfl node --connect`` for each node of the ring, once the launcher listens."""
    port = int(address.rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while not listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)  # the launcher imports torch and binds first
    n = int(flags[flags.index("--topology") + 1].split(":")[1])
    return [subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "node", "--connect", address,
                              "--id", str(i), "--host", "127.0.0.1"], cwd=source, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(n)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=ROOT, help="the p2pfl checkout to run")
    ap.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    ap.add_argument("--tag", default="after", help="results file: faults_<tag>.json")
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", args.source, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    rows = []
    for name in args.only:
        row = run(name, os.path.abspath(args.source))
        rows.append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"faults_{args.tag}.json")
    try:  # rows of scenarios not run this time are kept, with their commit
        with open(path) as fh:
            kept = json.load(fh)
        old = [dict(r, commit=r.get("commit", kept.get("commit"))) for r in kept["rows"]]
    except (OSError, ValueError, KeyError):
        old = []
    fresh = {r["scenario"] for r in rows}
    rows = [r for r in old if r["scenario"] not in fresh] + [dict(r, commit=commit)
                                                             for r in rows]
    with open(path + ".tmp", "w") as fh:
        json.dump({"rows": rows}, fh, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
