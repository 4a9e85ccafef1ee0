"""What a run stopped early (Ctrl-C, ``--target-accuracy``) reports, against its records.

    python benchmarks/stop_figures.py [--tree TREE] [--repeats 3]

Runs ``p2pfl cluster`` of the checkout ``TREE`` (default: this one), each case
``--repeats`` times, and prints per run:
- ``fedavg-int``: ``--mode fedavg --nodes 4 --rounds 3000``, SIGINT once 100 records are
  written: ``misses_total``, and the coordinator's records with a failed worker;
- ``fedavg-target``: ``--mode fedavg --nodes 4 --rounds 40 --target-accuracy 0.5``:
  ``target_reached_at_round`` and the coordinator's last round;
- ``gossip-target``: ``--topology ring:4 --rounds 40 --target-accuracy 0.5``, and
  ``gossip-int``: ``--topology ring:4 --rounds 100000 --schedule async``, SIGINT once
  400 records are written: the rounds of ``accuracy_per_round`` and ``consensus_last``,
  how many nodes recorded that round (of 4), and the consensus ``max``.

Writes benchmarks/results/stop_figures.json (entries by commit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._results import commit_of, records, save_by_commit, tree_args  # noqa: E402

CASES = {
    "fedavg-int": (["--mode", "fedavg", "--nodes", "4", "--rounds", "3000"], 100),
    "fedavg-target": (["--mode", "fedavg", "--nodes", "4", "--rounds", "40",
                       "--target-accuracy", "0.5"], None),
    "gossip-target": (["--topology", "ring:4", "--rounds", "40", "--target-accuracy", "0.5"],
                      None),
    "gossip-int": (["--topology", "ring:4", "--rounds", "100000", "--schedule", "async"], 400),
}


def run(tree: str, flags: list, interrupt_at, out: str) -> tuple[dict, list]:
    cmd = [sys.executable, "-m", "p2pfl.cli", "cluster", "--dataset", "digits", "-q",
           "--out", out, *flags]
    proc = subprocess.Popen(cmd, cwd=tree, stderr=subprocess.DEVNULL)
    try:
        if interrupt_at is not None:
            deadline = time.monotonic() + 120
            while len(records(out)) < interrupt_at and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh), records(out)


def figures(name: str, s: dict, recs: list) -> dict:
    coord = [r for r in recs if r.get("role") == "coordinator"]
    if name.startswith("fedavg"):
        return {"misses_total": s["misses_total"],
                "rounds_with_failures": sum(bool(r["failed"]) for r in coord),
                "target_reached_at_round": s["target_reached_at_round"],
                "coordinator_last_round": coord[-1]["round"] if coord else None}
    apr, cons = s["accuracy_per_round"], s["consensus_last"] or {}
    def played(rnd):
        return len({r["node"] for r in recs if r["round"] == rnd and not r.get("offline")})
    return {"accuracy_per_round_last": apr[-1][0] if apr else None,
            "nodes_in_it": played(apr[-1][0]) if apr else None,
            "consensus_round": cons.get("round"), "nodes_in_consensus_round":
            played(cons["round"]) if cons else None, "consensus_max": cons.get("max"),
            "target_reached_at_round": s["target_reached_at_round"]}


def main() -> None:
    args = tree_args(__doc__)
    tree = args.tree
    entry = {"tree": tree, "commit": commit_of(tree, dirty=True), "cases": {}}
    with tempfile.TemporaryDirectory(prefix="p2pfl-stop-") as tmp:
        for name, (flags, at) in CASES.items():
            rows = []
            for i in range(args.repeats):
                s, recs = run(tree, flags, at, os.path.join(tmp, f"{name}-{i}"))
                rows.append(figures(name, s, recs))
                print(f"  {entry['commit']} {name} {i}: {rows[-1]}", flush=True)
            entry["cases"][name] = rows
    save_by_commit("stop_figures.json", entry["commit"], entry)


if __name__ == "__main__":
    main()
