"""The launcher's memory over a long run: what each record costs it (issue 10).

    python benchmarks/launcher_memory.py [--tree OLD] [--rounds 30000] [--short 1000]

Runs ``ring:8`` exchange-only (``--model mlp:135 --local-steps 0 --no-consensus``: about
1,000 rounds a second here, 8 records a round) from each tree given (``--tree``, the
default this checkout; ``PYTHONPATH`` set to it, C extensions built or copied in), once
with ``--short`` rounds and once with ``--rounds``.  The launcher is a child process
that calls ``run_cluster`` and reports its own peak RSS (``ru_maxrss``).  What a record
costs the launcher is the difference of the two peaks over the difference of the
records written.  Writes ``benchmarks/results/launcher_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _results import commit_of  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402

#: the launcher: run_cluster in this child process, then its own peak RSS and records
CHILD = """
import json, resource, sys
from p2pfl.api import run_cluster
res = run_cluster(topology="ring:8", dataset="digits", model="mlp:135", local_steps=0,
                  rounds=int(sys.argv[1]), consensus=False, quiet=True, out=sys.argv[2])
with open(sys.argv[2] + "/metrics.jsonl") as fh:
    records = sum(1 for _ in fh)
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "records": records, "wall_s": res.summary["wall_s"]}))
"""


def launcher_peak(tree: str, rounds: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"run{rounds}")
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, "-c", CHILD, str(rounds), out], cwd=tree, env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", help="another source tree to measure "
                    "(repeatable); this checkout is always measured, last")
    ap.add_argument("--rounds", type=int, default=30000)
    ap.add_argument("--short", type=int, default=1000)
    args = ap.parse_args()
    trees = list(args.tree or [])
    if ROOT not in [os.path.abspath(t) for t in trees]:
        trees.append(ROOT)
    results = []
    for tree in trees:
        with tempfile.TemporaryDirectory() as tmp:
            short = launcher_peak(tree, args.short, tmp)
            long = launcher_peak(tree, args.rounds, tmp)
        per_record = ((long["peak_rss_bytes"] - short["peak_rss_bytes"])
                      / (long["records"] - short["records"]))
        row = {"tree": tree, "commit": commit_of(tree, dirty=True), "short": short,
               "long": long, "bytes_per_record": round(per_record, 1)}
        results.append(row)
        print(f"{row['commit']}: launcher peak {short['peak_rss_bytes'] / 2**20:.1f} MiB after "
              f"{short['records']:,} records, {long['peak_rss_bytes'] / 2**20:.1f} MiB after "
              f"{long['records']:,} ({long['wall_s']:.1f} s): {per_record:,.0f} bytes a record")
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "launcher_memory.json"),
                      {"rounds": args.rounds, "short": args.short, "runs": results})


if __name__ == "__main__":
    main()
