"""Mixing weights and spectral gaps of two checkouts, compared bit for bit.

    python benchmarks/mixing_bits.py --tree OLD

Builds, in this checkout's code and in OLD's (each in a fresh process), every
generator spec below and every graph file in topologies/ with each mixing scheme
(and ``attr:bandwidth`` on the files), and prints how many topology-scheme pairs
have the same dense weights (a SHA-256 of the float64 bytes) and the same gap, and
the relative difference of the gaps that differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPECS = ["ring:8", "ring:100", "line:50", "torus:4x4", "torus:10x13", "complete:20", "star:30",
         "exponential:64", "erdos_renyi:200:0.05:3", "small_world:300:6:0.2:1",
         "random_regular:4:1024:0", "random_regular:7:500:2", "barabasi_albert:400:3:5",
         "torus:64x64"]

DUMP = """
import glob, hashlib, json, sys
import numpy as np
from p2pfl import topology as tp
files = [f for f in sorted(glob.glob("topologies/*")) if not f.endswith((".py", ".md"))]
out = {}
for s in json.loads(sys.argv[1]) + files:
    for scheme in ["metropolis", "uniform", "weight"] + (["attr:bandwidth"] if s in files else []):
        try:
            t = tp.build(s, scheme=scheme)
        except Exception as e:
            out[s + "|" + scheme] = repr(e)[:80]
            continue
        W = np.ascontiguousarray(t.weights)
        out[s + "|" + scheme] = [hashlib.sha256(W.tobytes()).hexdigest(), t.spectral_gap]
print(json.dumps(out))
"""


def dump(tree: str) -> dict:
    res = subprocess.run([sys.executable, "-c", DUMP, json.dumps(SPECS)], cwd=tree,
                         env=dict(os.environ, PYTHONPATH=tree), capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", required=True, help="the other checkout")
    args = ap.parse_args()
    new, old = dump(ROOT), dump(os.path.abspath(args.tree))
    def weights(d, k):  # the hash, or the refusal's text
        return d[k][0] if isinstance(d.get(k), list) else d.get(k)

    same_w = sum(weights(new, k) == weights(old, k) for k in new)
    gaps = {k: (old[k][1], new[k][1]) for k in new
            if isinstance(new[k], list) and isinstance(old.get(k), list) and old[k][1] != new[k][1]}
    print(f"{len(new)} topology-scheme pairs: weights the same in {same_w}, gaps the same in "
          f"{len(new) - len(gaps)}")
    for k, (a, b) in sorted(gaps.items()):
        rel = "-" if a is None or b is None else f"{abs(a - b) / a:.1e}"
        print(f"  {k}: gap {a} -> {b} (relative difference {rel})")


if __name__ == "__main__":
    main()
