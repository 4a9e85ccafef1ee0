"""A server run whose coordinator's uplink is too slow for its final models.

``p2pfl cluster --mode fedavg --nodes 3 --rounds 1 --link up_mbps=0.02
--round-timeout 2 --dataset digits``: at 20 kbit/s the coordinator's models
do not leave its emulated uplink within a round time-out and the closer's
grace.  Its last record waits that long for them, and its process again
before its bye (the run's end).  Measures the whole command's wall time, its
exit status, the payloads dropped unsent, and how many workers got their final
model (``final_accuracy_by_worker``): what a shorter end would cost.
``--tree`` runs another checkout (another commit, to compare).

    python benchmarks/stalled_uplink.py [--tree DIR] [--repeats 3]

Writes ``benchmarks/results/stalled_uplink.json`` (one entry per tree and
commit; an entry of the same tree and commit is replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _results import summarize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "stalled_uplink.json")
FLAGS = ["--mode", "fedavg", "--nodes", "3", "--rounds", "1", "--link", "up_mbps=0.02",
         "--round-timeout", "2", "--dataset", "digits", "-q"]


def one_run(tree: str) -> dict:
    out = f"/tmp/stalled_uplink_{os.getpid()}"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", *FLAGS, "--out", out],
                         cwd=tree, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    with open(os.path.join(out, "summary.json")) as fh:
        summary = json.load(fh)
    return {"seconds": round(wall, 3), "status": res.returncode,
            "run_wall_s": summary["wall_s"],
            "link_unsent": summary["dropped"].get("link_unsent", 0),
            "workers_with_final": len(summary.get("final_accuracy_by_worker") or {})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    runs = [one_run(tree) for _ in range(args.repeats)]
    for r in runs:
        print(f"{r['seconds']:7.2f} s  exit {r['status']}  run wall_s {r['run_wall_s']:.2f}  "
              f"link_unsent {r['link_unsent']}  workers with a final model "
              f"{r['workers_with_final']} of 3")
    summarize(OUT, tree, runs, "the whole command took", {}, {"flags": FLAGS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
