"""CHOCO nodes with codecs of their own: one consensus step size for every node (since
``d43a437``) against each node its own codec's (the trees before), on the same runs.

    python benchmarks/mixed_gamma.py --tree OLD [--tree NEW] [--seeds 0 1 2] [--rounds 150]

Runs ``p2pfl cluster --topology ring:8 --dataset digits --algorithm choco --compression
topk:0.05 --partition dirichlet:0.3 --profiles P`` where the profile P gives node 0
``fp16`` and node 4 ``stc:0.1`` (their defaults γ = 1.0 and 0.2; top-5 %'s is 0.1), from
each tree in turn (``PYTHONPATH`` set to the tree; the C extensions must be built or
copied in), for each seed.  Prints each run's γ per node (from ``config.json``), the
final mean and lowest accuracy, and the relative consensus distance (median and max over
the nodes) at the last round; writes ``benchmarks/results/mixed_gamma.json``.
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

from _results import commit_of, write_results  # noqa: E402

PROFILE = '[nodes.0]\ncompression = "fp16"\n[nodes.4]\ncompression = "stc:0.1"\n'


def one_run(tree: str, seed: int, rounds: int, tmp: str) -> dict:
    out, prof = os.path.join(tmp, "run"), os.path.join(tmp, "codecs.toml")
    with open(prof, "w") as fh:
        fh.write(PROFILE)
    subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "--topology", "ring:8",
                    "--dataset", "digits", "--algorithm", "choco", "--compression",
                    "topk:0.05", "--partition", "dirichlet:0.3", "--profiles", prof,
                    "--rounds", str(rounds), "--seed", str(seed), "-q", "--out", out],
                   cwd=tree, env=dict(os.environ, PYTHONPATH=tree), check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    with open(os.path.join(out, "config.json")) as fh:
        groups = json.load(fh)["resolved"]["options"]["by_node"]
    gamma = {n: g["options"]["gamma"] for g in groups for n in g["nodes"]}
    last = s["consensus_last"] or {}
    return {"gamma": [gamma[i] for i in range(8)], "accuracy_mean": s["accuracy_mean"],
            "accuracy_min": s["accuracy_min"], "consensus_rel_median": last.get("rel_median"),
            "consensus_rel_max": last.get("rel_max"), "misses": s["misses_total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=150)
    args = ap.parse_args()
    trees = args.tree if len(args.tree) > 1 else args.tree + [ROOT]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for tree in trees:
                r = dict(one_run(tree, seed, args.rounds, tmp), tree=commit_of(tree, True),
                         seed=seed)
                rows.append(r)
                print(f"seed {seed} {r['tree']:>9s}: gamma {r['gamma']}  accuracy "
                      f"{r['accuracy_mean']:.4f} (min {r['accuracy_min']:.4f})  relative "
                      f"consensus distance {r['consensus_rel_median']:.4f} (max "
                      f"{r['consensus_rel_max']:.4f})  misses {r['misses']}", flush=True)
    write_results("mixed_gamma.json", {"rounds": args.rounds, "runs": rows})


if __name__ == "__main__":
    main()
