"""Large topologies: wall time, peak memory and spectral gap before any node starts.

    python benchmarks/topology_scale.py [--tree TREE] [--repeats 3]

Runs, in TREE's code, ``p2pfl topology SPEC`` for 4,096- and 16,384-node graphs and
``p2pfl cluster --dry-run`` of a 4,096-node in-process run (the plan: every node's
spec, its mixing weights and the spectral gap, and no node started), each in a fresh
process; its wall time and peak RSS (the child's own, from ``os.wait4``).  Prints
the medians and the gap line, and sets the checkout's entry in
benchmarks/results/topology_scale.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._results import commit_of, save_by_commit, spread, tree_args  # noqa: E402

CASES = {
    "topology torus:64x64": ["topology", "torus:64x64"],
    "topology torus:128x128": ["topology", "torus:128x128"],
    "topology random_regular:4:16384": ["topology", "random_regular:4:16384"],
    "topology ring:16384": ["topology", "ring:16384"],
    "cluster --dry-run random_regular:4:4096": [
        "cluster", "--dry-run", "--in-process", "--topology", "random_regular:4:4096",
        "--dataset", "mnist1d:25000", "--rounds", "10"],
}


def one(tree: str, argv: list) -> dict:
    """One run in a fresh process: seconds, peak RSS and the gap it printed."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", *argv], cwd=tree,
                         env=dict(os.environ, PYTHONPATH=tree), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{argv} failed ({p.returncode}): {out[-500:]}")
    gap = next((line[line.index("spectral gap"):].split(",")[0].strip('"')
                for line in out.splitlines() if "spectral gap" in line), None)
    gap = gap or next((line.strip().rstrip(",") for line in out.splitlines()
                       if '"spectral_gap"' in line), None)
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "gap": gap}


def main() -> None:
    args = tree_args(__doc__)
    commit = commit_of(args.tree, dirty=True)
    entry = {"tree": args.tree, "repeats": args.repeats}
    for name, argv in CASES.items():
        runs = [one(args.tree, argv) for _ in range(args.repeats)]
        mid, lo, hi = spread([r["seconds"] for r in runs])
        rss = spread([r["peak_rss_mb"] for r in runs])[0]
        print(f"{commit} {name}: {mid:.2f} s ({lo:.2f}-{hi:.2f}), {rss:.0f} MB, "
              f"{runs[0]['gap']}", flush=True)
        entry[name] = {"median_s": mid, "peak_rss_mb": rss, "gap": runs[0]["gap"],
                       "runs": runs}
    save_by_commit("topology_scale.json", commit, entry)


if __name__ == "__main__":
    main()
