"""A node that comes back among lying neighbours: its accuracy right after each rejoin.

``torus:4x4`` on digits, 100 rounds, ``--robust R`` (``clip:0.5`` and ``trimmed:0.25``
by default), each with its repository profile of sign-flip nodes
(``nodes/torus_sign_flip.toml``: 0, 6, 9; ``nodes/torus_sign_flip_apart.toml``: 0, 10)
plus node 1 (neighbours 0, 2, 5, 13) offline four times, from 0.8 s to 4.1 s.
Reports node 1's accuracy in the round after each time it came back (evaluated every
round), the honest nodes' final mean accuracy, and the command's own ``--tree`` (an
older checkout, to compare).

    python benchmarks/robust_rejoin.py [--tree DIR] [--repeats 3]

Appends to ``benchmarks/results/robust_rejoin.json`` (an entry of the same tree and
commit is replaced).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from _results import records, repeat_cases, tree_args

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "robust_rejoin.json")
CASES = {"clip:0.5": "torus_sign_flip.toml", "trimmed:0.25": "torus_sign_flip_apart.toml"}
OFFLINE = "[[0.8, 1.1], [1.8, 2.1], [2.8, 3.1], [3.8, 4.1]]"


def one_run(tree: str, robust: str, work: str) -> dict:
    profile = os.path.join(work, "profile.toml")
    with open(os.path.join(os.path.dirname(HERE), "nodes", CASES[robust])) as fh:
        text = fh.read()
    with open(profile, "w") as fh:
        fh.write(text + f"\n[nodes.1]\noffline = {OFFLINE}\n")
    out = os.path.join(work, "run")
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "--topology",
                           "torus:4x4", "--dataset", "digits", "--rounds", "100",
                           "--eval-every", "1", "--robust", robust, "--profiles", profile,
                           "-q", "--out", out], cwd=tree, env=dict(os.environ, PYTHONPATH=tree),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"the run failed: {proc.stderr.strip()[-500:]}")
    mine = [r for r in records(out) if r["node"] == 1]
    back = [round(mine[i + 1]["accuracy"], 4) for i, r in enumerate(mine[:-1])
            if r.get("offline") and not mine[i + 1].get("offline")]
    with open(os.path.join(out, "summary.json")) as fh:
        summary = json.load(fh)
    return {"back_accuracy": back, "accuracy_mean_honest": summary["accuracy_mean_honest"]}


def main() -> int:
    args = tree_args(__doc__)
    repeat_cases("robust_rejoin_", args, {
        robust: (lambda tree, work, rule=robust: one_run(tree, rule, work)) for robust in CASES},
        OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
