"""CurveZMQ at scale: the scale command with and without ``--secure``, in alternation.

    python benchmarks/secure_scale.py [--nodes 1024] [--rounds 10] [--pairs 3]
                                      [--modes plain secure]

Runs ``p2pfl cluster --in-process --topology random_regular:4:N --dataset mnist1d
--rounds 10``, then the same with ``--secure`` (actors of different host processes
talk CURVE over ipc, each with its own key), ``--pairs`` times in alternation, since
this machine's speed drifts.  Prints each run's whole-process wall time, misses,
summed peak RSS, connection set-up bytes and accuracy, and the secure run's wall time
as a ratio to the plain one of its pair.  ``--modes secure`` runs the secure command
alone (4,096 nodes, whose plain runs scale.py measures).  Writes
benchmarks/results/secure_scale.json, keeping the rows of other node counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import commit_of  # noqa: E402
from scale import ROOT, run  # noqa: E402

from p2pfl.metrics import write_json_atomic  # noqa: E402


def _setup_bytes(out: str) -> int:
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)["setup_bytes_total"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--modes", nargs="+", choices=("plain", "secure"),
                    default=["plain", "secure"])
    args = ap.parse_args()
    flags = {"plain": (), "secure": ("--secure",)}
    rows, ratios = [], []
    with tempfile.TemporaryDirectory(prefix="p2pfl-secure-scale-") as tmp:
        for k in range(args.pairs):
            pair = {}
            for mode in args.modes:
                out = os.path.join(tmp, f"{mode}{k}")
                row = run(args.nodes, args.rounds, out, flags[mode])
                row.update(mode=mode, pair=k, setup_bytes_total=_setup_bytes(out))
                rows.append(row)
                pair[mode] = row
                print(f"  pair {k} {mode:6s}: {row['process_wall_s']:.1f} s whole process "
                      f"(run {row['run_wall_s']:.1f} s), {row['misses_total']} misses, "
                      f"{row['failed_nodes']} failed, peak RSS "
                      f"{row['peak_rss_bytes_summed'] / 2**30:.2f} GiB summed, set-up "
                      f"{row['setup_bytes_total']:,} B, accuracy {row['accuracy_mean']:.4f}",
                      flush=True)
            if len(pair) == 2:
                ratios.append(pair["secure"]["process_wall_s"] / pair["plain"]["process_wall_s"])
    if ratios:
        print(f"secure / plain whole-process wall time: {', '.join(f'{r:.2f}' for r in ratios)}"
              f" (median {statistics.median(ratios):.2f})")
    path = os.path.join(ROOT, "benchmarks", "results", "secure_scale.json")
    kept = {}
    if os.path.exists(path):
        with open(path) as fh:
            kept = {k: v for k, v in json.load(fh).items() if k != str(args.nodes)}
    kept[str(args.nodes)] = {"commit": commit_of(ROOT), "cores": len(os.sched_getaffinity(0)),
                             "runs": rows, "secure_over_plain_wall": ratios}
    write_json_atomic(path, kept)


if __name__ == "__main__":
    main()
