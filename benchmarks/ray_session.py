"""Runs in a Ray session the caller keeps: each ``--backend ray`` run's time to join.

    python benchmarks/ray_session.py [--runs 3] [--tree DIR]

Starts a local Ray instance of 2 CPUs (``ray.init``), then runs ``ring:3`` digits
for 2 rounds ``--runs`` times in it, as a notebook or a sweep script would, and prints
each run's time and the "nodes joined in" time its launcher logged.  ``--tree`` runs
another checkout (to compare with an older commit).  Writes
benchmarks/results/ray_session.json (an entry per commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import commit_of, save_entry  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys, tempfile, time, ray, p2pfl
ray.init(address='local', include_dashboard=False, num_cpus=2, logging_level=40)
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for k in range(int(sys.argv[1])):
        t = time.perf_counter()
        r = p2pfl.run_cluster('ring:3', backend='ray', rounds=2, out=f'{tmp}/run{k}')
        rows.append({'run': k, 'run_s': round(time.perf_counter() - t, 2),
                     'failed': len(r.summary['failed_nodes'])})
ray.shutdown()
print(json.dumps(rows))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tree", default=ROOT)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.path.abspath(args.tree), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(args.runs)], cwd=args.tree,
                         env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    joined = [float(x.split(" joined in ")[1].split(" s")[0]) for x in out.stderr.splitlines()
              if " joined in " in x]  # each launcher's log line, in order
    for r, j in zip(rows, joined):
        r["joined_s"] = j
    commit = commit_of(args.tree)
    for r in rows:
        print(f"  {commit} run {r['run']}: {r['run_s']:.1f} s, nodes joined in "
              f"{r['joined_s']:.1f} s, {r['failed']} failed")
    save_entry(os.path.join(ROOT, "benchmarks", "results", "ray_session.json"),
               {"commit": commit, "runs": rows}, ("commit",))


if __name__ == "__main__":
    main()
