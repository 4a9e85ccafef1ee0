"""A server-mode worker offline for the whole run: does it get the final model?

    python benchmarks/offline_final.py [--tree TREE] [--repeats 30]

Each repeat runs ``p2pfl cluster --mode fedavg --nodes 16 --rounds 10 --dataset digits
--availability TRACE`` in TREE's code, with node 7 offline from 0 to 60 s (the run
takes well under a second of rounds), and counts the runs in which node 7 has a
final record or a ``final_accuracy_by_worker`` entry: it should have neither (it
was offline at the end).  Adds an entry per checkout to
benchmarks/results/offline_final.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._results import commit_of, records, save_by_commit, tree_args  # noqa: E402


def one(tree: str, trace: str, out: str) -> bool:
    """Whether node 7 ended with the final model in one run."""
    subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "--mode", "fedavg",
                    "--nodes", "16", "--rounds", "10", "--dataset", "digits",
                    "--availability", trace, "-q", "--out", out], cwd=tree, check=True,
                   env=dict(os.environ, PYTHONPATH=tree), timeout=300)
    with open(os.path.join(out, "summary.json")) as fh:
        summary = json.load(fh)
    finals = [r for r in records(out) if r["node"] == 7 and r.get("final")]
    return bool(finals) or "7" in summary["final_accuracy_by_worker"]


def main() -> None:
    args = tree_args(__doc__, repeats=30)
    commit = commit_of(args.tree, dirty=True)
    with tempfile.TemporaryDirectory(prefix="p2pfl-offline-") as tmp:
        trace = os.path.join(tmp, "trace.csv")
        with open(trace, "w") as fh:
            fh.write("node,offline_start_s,offline_end_s\n7,0.0,60\n")
        hits = sum(one(args.tree, trace, os.path.join(tmp, f"run{i}"))
                   for i in range(args.repeats))
    print(f"{commit}: node 7 got the final model in {hits} of {args.repeats} runs")
    save_by_commit("offline_final.json", commit,
                   {"tree": args.tree, "runs": args.repeats, "final_taken": hits})


if __name__ == "__main__":
    main()
