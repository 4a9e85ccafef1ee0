"""How long a server run goes on after its coordinator dies for good (no ``--restart``).

Runs ``p2pfl cluster --mode fedavg --nodes 3 --rounds 500 --round-timeout 1`` on
digits, SIGKILLs the coordinator's process once it has recorded 3 rounds, and times
the launcher's exit from the kill (it exits 1: the coordinator failed).  ``--tree``
runs another checkout's CLI (an older commit, to compare).

    python benchmarks/dead_coordinator.py [--tree DIR] [--repeats 3]

Writes ``benchmarks/results/dead_coordinator.json`` (an entry per tree and commit).
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

from _results import commit_of, coordinator_rounds, records, save_entry

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def one_run(tree: str, out: str) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--dataset",
                             "digits", "--mode", "fedavg", "--nodes", "3", "--rounds", "500",
                             "--round-timeout", "1", "-q", "--out", out], cwd=tree,
                            stderr=subprocess.DEVNULL)
    try:
        while coordinator_rounds(records(out)) < 3:
            if proc.poll() is not None:
                raise SystemExit(f"the run ended early ({proc.returncode})")
            time.sleep(0.02)
        with open(os.path.join(out, "nodes.json")) as fh:
            pid = next(n["pid"] for n in json.load(fh) if n["label"] == "coordinator")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        status = proc.wait(timeout=180)
        return {"exit": status, "ended_after_kill_s": round(time.monotonic() - killed, 2)}
    finally:
        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=ROOT)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tree, runs = os.path.abspath(args.tree), []
    with tempfile.TemporaryDirectory(prefix="p2pfl-dead-coordinator-") as tmp:
        for k in range(args.repeats):
            runs.append(one_run(tree, os.path.join(tmp, str(k))))
            print(f"  {commit_of(tree)} run {k}: exit {runs[-1]['exit']}, ended "
                  f"{runs[-1]['ended_after_kill_s']:.2f} s after the kill", flush=True)
    save_entry(os.path.join(HERE, "results", "dead_coordinator.json"),
               {"tree": tree, "commit": commit_of(tree), "runs": runs}, ("tree", "commit"))


if __name__ == "__main__":
    main()
