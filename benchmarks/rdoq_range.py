"""RDOQ at small steps: time and memory of one encode, by checkout.

    python benchmarks/rdoq_range.py [--tree TREE] [--repeats 3]

``quant:Δ:rd=λ`` tabled the rate of every magnitude up to the largest level: a step
of 1e-7 over weights near 1.5 made tables of 15 M entries a pass, and quant:1e-12
asked for terabytes.  Each case codes 100,000 weights (normal, σ = 0.3, seed 0)
with ``quant:Δ:rd=0.1+cabac`` in a fresh process of TREE's code, and prints the
stream's bytes (the same in every checkout: the choice of levels did not change),
the encode's time (best of ``--repeats``) and the process's peak RSS beyond what it
held before the encode.  Adds an entry per checkout to
benchmarks/results/rdoq_range.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import commit_of, save_by_commit, tree_args  # noqa: E402

STEPS = ("1e-4", "1e-6", "1e-7", "1e-12")

ONE = r"""
import json, resource, sys, time
import torch
from p2pfl.compression import make_codec
torch.manual_seed(0)
x = torch.randn(100000) * 0.3
codec = make_codec(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best, what = float("inf"), None
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    try:
        what = sum(len(memoryview(f).cast("B")) for f in codec.encode(x))
    except Exception as exc:
        what = f"{type(exc).__name__}: {str(exc)[:100]}"
    best = min(best, time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"result": what, "encode_ms": round(best * 1e3, 2),
                  "peak_rss_added_mib": round((peak - before) / 1024, 1)}))
"""


def case(tree: str, spec: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", ONE, spec, str(repeats)], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        return {"result": f"exit {out.returncode}: {out.stderr.strip()[-200:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = tree_args(__doc__)
    tree = args.tree
    commit = commit_of(tree, dirty=True)
    rows = {}
    for step in STEPS:
        spec = f"quant:{step}:rd=0.1+cabac"
        rows[spec] = case(tree, spec, args.repeats)
        print(f"{commit} {spec}: {rows[spec]}", flush=True)
    save_by_commit("rdoq_range.json", commit, {"tree": tree, "cases": rows})


if __name__ == "__main__":
    main()
