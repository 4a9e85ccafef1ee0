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


def _records(out: str) -> list:
    try:
        with open(os.path.join(out, "metrics.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]
    except OSError:
        return []


def _coordinator_rounds(recs: list) -> int:
    return sum(r.get("role") == "coordinator" for r in recs)


#: name -> (flags, node to signal, signal, when: records -> bool)
SCENARIOS = {
    "killed_worker": (["--mode", "fedavg", "--nodes", "4", "--rounds", "30",
                       "--round-timeout", "5"], 2, signal.SIGKILL,
                      lambda r: _coordinator_rounds(r) >= 3),
    "stopped_worker": (["--mode", "fedavg", "--nodes", "3", "--rounds", "12",
                        "--round-timeout", "2"], 1, signal.SIGSTOP,
                       lambda r: _coordinator_rounds(r) >= 2),
    "stopped_gossip_node": (["--topology", "ring:4", "--rounds", "15", "--round-timeout", "1"],
                            1, signal.SIGSTOP, lambda r: len(r) >= 8),
    "fedavg_target": (["--mode", "fedavg", "--nodes", "4", "--rounds", "200",
                       "--target-accuracy", "0.8"], None, None, None),
    "gossip_target": (["--topology", "ring:4", "--rounds", "300", "--target-accuracy", "0.85"],
                      None, None, None),
    "gossip_churn": (["--topology", "ring:6", "--rounds", "60", "--churn", "1.5:0.5:1",
                      "--round-timeout", "2"], None, None, None),
}


def run(name: str, source: str) -> dict:
    flags, victim, sig, when = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix="p2pfl-faults-") as tmp:
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "p2pfl.cli", "cluster", "--dataset", "digits", "-q",
               "--out", out, *flags]
        env = dict(os.environ, PYTHONPATH=source)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        t_signal, pid = None, None
        try:
            if sig is not None:
                while not when(_records(out)):
                    if proc.poll() is not None:
                        raise SystemExit(f"{name}: the run ended first: {proc.stderr.read()}")
                    time.sleep(0.02)
                with open(os.path.join(out, "nodes.json")) as fh:
                    pid = next(n["pid"] for n in json.load(fh) if n["label"] == victim)
                os.kill(pid, sig)
                t_signal = time.monotonic()
            proc.wait(timeout=600)
        finally:
            if pid and sig == signal.SIGSTOP:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            proc.kill()
        t_end = time.monotonic()
        with open(os.path.join(out, "summary.json")) as fh:
            s = json.load(fh)
        recs = _records(out)
    coord = [r for r in recs if r.get("role") == "coordinator"]
    codes = [code for r in coord for w, code in r.get("failed", []) if victim in (None, w)]
    row = {
        "scenario": name, "command": "p2pfl cluster --dataset digits " + " ".join(flags),
        "signal": None if sig is None else signal.Signals(sig).name, "exit": proc.returncode,
        "run_s": round(t_end - t0, 1),
        "after_signal_s": None if t_signal is None else round(t_end - t_signal, 1),
        "coordinator_timeouts": codes.count("timeout"), "misses_total": s.get("misses_total"),
        "failed_nodes": s.get("failed_nodes"),
        "target_reached_at_round": s.get("target_reached_at_round"),
        "last_coordinator_round": coord[-1]["round"] if coord else None,
        "bytes_sent_total": s["bytes_sent_total"],
        "bytes_sent_counted_by_nodes": s.get("bytes_sent_counted_by_nodes"),
        "bytes_received_total": s["bytes_received_total"],
        "records_bytes_sent": sum(r.get("bytes_sent") or 0 for r in recs),
        "accuracy_mean": s["accuracy_mean"],
    }
    if coord:
        rounds = [r for r, _ in s.get("global_accuracy_per_round", [])]
        row["global_accuracy_rounds_repeated"] = len(rounds) - len(set(rounds))
    return row


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
    with open(path + ".tmp", "w") as fh:
        json.dump({"commit": commit, "rows": rows}, fh, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
