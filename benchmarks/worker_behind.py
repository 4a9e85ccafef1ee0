"""A server-mode worker paused mid-run: what its backlog of instructions costs.

Runs ``p2pfl cluster --mode MODE --nodes 3 --rounds 300 --round-timeout 1`` on
digits, pauses worker 1 (SIGSTOP) for ``--pause`` seconds once the coordinator
has recorded round 2, and resumes it.  Reports the replies the coordinator
dropped as late (``stale_round``), the instructions the worker skipped
(``instructions_skipped_total``), the bytes sent up, misses, the final global
accuracy and the wall time.  ``--tree`` runs another checkout's CLI (an older
commit, to compare).

    python benchmarks/worker_behind.py [--tree DIR] [--mode stc] [--pause 3] [--repeats 3]

Appends to ``benchmarks/results/worker_behind.json`` (an entry of the same tree,
commit, mode and pause is replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from _results import (commit_of, coordinator_rounds, run_paused, records as _records,
                      save_entry)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "worker_behind.json")


def one_run(tree: str, mode: str, pause: float) -> dict:
    out = f"/tmp/worker_behind_{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--mode", mode,
                             "--nodes", "3", "--rounds", "300", "--round-timeout", "1",
                             "--dataset", "digits", "-q", "--out", out], cwd=tree,
                            stderr=subprocess.PIPE, text=True)
    run_paused(proc, out, 1, lambda recs: coordinator_rounds(recs) >= 2, pause)
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    return {"stale_round": s["dropped"].get("stale_round", 0),
            "skipped": s.get("instructions_skipped_total"),
            "bytes_up": s["bytes_up_total"], "misses": s["misses_total"],
            "global_accuracy": s["global_accuracy_per_round"][-1][1], "wall_s": s["wall_s"],
            "worker1_records": sum(r["node"] == 1 for r in _records(out))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--mode", default="stc")
    ap.add_argument("--pause", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    commit = commit_of(tree)
    runs = []
    for _ in range(args.repeats):
        runs.append(one_run(tree, args.mode, args.pause))
        print(json.dumps(runs[-1]))
    entry = {"tree": tree, "commit": commit, "mode": args.mode, "pause_s": args.pause,
             "runs": runs}
    save_entry(OUT, entry, ("tree", "commit", "mode", "pause_s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
