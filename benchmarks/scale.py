"""A thousand nodes on two cores (issue 10): the scale commands exactly as written.

    python benchmarks/scale.py [--nodes 1024 4096] [--rounds 10]

Runs ``p2pfl cluster --in-process --topology random_regular:4:N --dataset mnist1d
--rounds 10`` with default settings for each N (past 4,000 nodes, more nodes than
mnist1d's 4,000 training samples, ``--dataset mnist1d:25000``), each a fresh process timed from
outside, and prints the whole process's wall time, the run's misses, the peak
RSS summed over the launcher and the host processes (``peak_rss_bytes`` in
summary.json: shared pages count once per process, so it is an upper bound), the
largest single process's peak RSS, and the accuracy.  Writes
benchmarks/results/scale.json, keeping the rows of sizes not measured this time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl.metrics import write_json_atomic  # noqa: E402


def dataset_for(nodes: int) -> str:
    """mnist1d has 4,000 training samples: past 4,000 nodes, generate 20,000."""
    return "mnist1d" if nodes <= 4000 else "mnist1d:25000"


def run(nodes: int, rounds: int, out: str, extra: tuple = ()) -> dict:
    """One scale run, ``extra`` flags added; the largest process's peak is the largest
    of every child waited for so far."""
    cmd = [sys.executable, "-m", "p2pfl.cli", "cluster", "--in-process", "--topology",
           f"random_regular:4:{nodes}", "--dataset", dataset_for(nodes), "--rounds",
           str(rounds), *extra, "--out", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{nodes} nodes failed ({proc.returncode}): {proc.stderr[-2000:]}")
    # the largest peak of any process waited for so far (the launcher: it waits for its hosts)
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    ready = next((line for line in proc.stderr.splitlines() if "nodes joined" in line), "")
    return {"nodes": nodes, "rounds": rounds, "command": " ".join(["p2pfl"] + cmd[3:-2]),
            "process_wall_s": round(wall, 2), "run_wall_s": s["wall_s"],
            "misses_total": s["misses_total"], "peak_rss_bytes_summed": s["peak_rss_bytes"],
            "host_processes": s["node_processes"], "largest_process_peak_rss_bytes": largest,
            "accuracy_mean": s["accuracy_mean"], "failed_nodes": len(s["failed_nodes"]),
            "start_up": ready.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    path = os.path.join(ROOT, "benchmarks", "results", "scale.json")
    kept = []  # the rows of sizes not measured now stay as they were
    if os.path.exists(path):
        with open(path) as fh:
            kept = [r for r in json.load(fh)["runs"] if r["nodes"] not in args.nodes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="p2pfl-scale-") as tmp:
        for n in args.nodes:
            row = run(n, args.rounds, os.path.join(tmp, str(n)))
            rows.append(row)
            print(f"  {n} nodes: {row['process_wall_s']:.1f} s whole process (run "
                  f"{row['run_wall_s']:.1f} s), {row['misses_total']} misses, peak RSS "
                  f"{row['peak_rss_bytes_summed'] / 2**30:.2f} GiB summed over "
                  f"{row['host_processes']} hosts and the launcher (largest process "
                  f"{row['largest_process_peak_rss_bytes'] / 2**30:.2f} GiB), accuracy "
                  f"{row['accuracy_mean']:.4f}; {row['start_up']}", flush=True)
    write_json_atomic(path, {"cores": len(os.sched_getaffinity(0)),
                             "runs": sorted(kept + rows, key=lambda r: r["nodes"])})


if __name__ == "__main__":
    main()
