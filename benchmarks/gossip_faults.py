"""Gossip nodes that stand still or stay away at the end: what each case costs.

Two cases, each a ``p2pfl cluster`` of ``--tree``'s CLI (an older commit, to compare):

* ``stopped``: ``ring:4``, digits, 2000 rounds of 10 local steps, round time-out 1 s;
  node 1 is stopped (SIGSTOP) for ``--pause`` seconds once 400 records are written, then
  resumed.  Reports node 1's rounds played with no neighbour heard (alone), its records,
  the messages it dropped beyond its window, the run's final accuracy, the max consensus
  distance of the last round and the wall time.
* ``offline_pair``: ``ring:5``, 300 rounds; nodes 1 and 2, neighbours, are offline from
  0.2 s until 200 s (a profile), long after the others finished.  Reports the command's
  time, the failed nodes, the last round nodes 1 and 2 recorded, and the final accuracy
  (the launcher fails silent nodes after 120 s).

    python benchmarks/gossip_faults.py [--tree DIR] [--case stopped|offline_pair]
        [--pause 3] [--repeats 2]

Appends to ``benchmarks/results/gossip_faults.json`` (an entry of the same tree, commit,
case and pause is replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from _results import commit_of, run_paused, records, save_entry

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "gossip_faults.json")


def _cluster(tree: str, out: str, *flags) -> subprocess.Popen:
    shutil.rmtree(out, ignore_errors=True)
    return subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--dataset",
                             "digits", "-q", "--out", out, *flags], cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=tree))


def _summary(out: str) -> dict:
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)


def stopped(tree: str, pause: float) -> dict:
    out = f"/tmp/gossip_faults_{os.getpid()}"
    proc = _cluster(tree, out, "--topology", "ring:4", "--rounds", "2000", "--local-steps",
                    "10", "--round-timeout", "1", "--eval-every", "100")
    run_paused(proc, out, 1, lambda recs: len(recs) >= 400, pause)
    s, mine = _summary(out), [r for r in records(out) if r["node"] == 1]
    return {"alone": sum(r["neighbours_heard"] == 0 for r in mine), "records": len(mine),
            "out_of_window": s["dropped"].get("round_out_of_window", 0),
            "accuracy_mean": s["accuracy_mean"], "consensus_max": s["consensus_last"]["max"],
            "wall_s": s["wall_s"]}


def offline_pair(tree: str) -> dict:
    out = f"/tmp/gossip_faults_{os.getpid()}"
    os.makedirs("/tmp/gossip_faults_profiles", exist_ok=True)
    profile = "/tmp/gossip_faults_profiles/pair.toml"
    with open(profile, "w") as fh:
        fh.write('[nodes."1"]\noffline = [[0.2, 200.0]]\n[nodes."2"]\noffline = [[0.2, 200.0]]\n')
    t0 = time.monotonic()
    proc = _cluster(tree, out, "--topology", "ring:5", "--rounds", "300", "--eval-every",
                    "100", "--profiles", profile)
    try:
        _, err = proc.communicate(timeout=900)
    finally:
        proc.kill()
    took = time.monotonic() - t0
    s = _summary(out) if os.path.exists(os.path.join(out, "summary.json")) else {}
    pair = [r["round"] for r in records(out) if r["node"] in (1, 2)]
    return {"exit": proc.returncode, "command_s": round(took, 1),
            "failed_nodes": s.get("failed_nodes"), "pair_last_round": max(pair, default=None),
            "accuracy_mean": s.get("accuracy_mean"),
            "error": err.strip().splitlines()[-1] if proc.returncode else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--case", choices=["stopped", "offline_pair"], default="stopped")
    ap.add_argument("--pause", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    runs = []
    for _ in range(args.repeats):
        runs.append(stopped(tree, args.pause) if args.case == "stopped" else offline_pair(tree))
        print(json.dumps(runs[-1]), flush=True)
    entry = {"tree": tree, "commit": commit_of(tree), "case": args.case,
             "pause_s": args.pause if args.case == "stopped" else None, "runs": runs}
    save_entry(OUT, entry, ("tree", "commit", "case", "pause_s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
