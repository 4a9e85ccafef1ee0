"""Byzantine-robust gossip on topologies that change every round.

    python benchmarks/robust_schedules.py [--rounds 60] [--seeds 0 1 2]
    python benchmarks/robust_schedules.py --profiles nodes/torus_sign_flip_apart.toml \
        --out benchmarks/results/robust_schedules_apart

16 nodes on digits, D-PSGD, three of them ``sign_flip`` (``nodes/torus_sign_flip.toml``:
nodes 0, 6 and 9 publish start − 4Δ of an honest update; or ``--profiles``, as the two of
``torus_sign_flip_apart.toml``, no torus node next to both), on the static ``torus:4x4``, the
one-peer exponential graph (``one_peer_exponential:16``) and a new random 4-regular
graph each round (a ``dynamic:`` file written into OUT, seeded per round), with
``--robust`` none, ``clip:0.5`` and ``trimmed:0.25`` (not on one peer a round: refused),
and a clean run of each topology without Byzantine nodes.  Prints and writes
``accuracy_mean_honest`` (the honest nodes' mean test accuracy at the last round) and
the Byzantine models dropped as non-finite, to benchmarks/results/robust_schedules/
(table.md, results.json).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import p2pfl  # noqa: E402
from benchmarks._results import commit_of  # noqa: E402
from benchmarks.one_peer import dynamic_file  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = ("clean", "none", "clip:0.5", "trimmed:0.25")


def run(name: str, topology: str, rule: str, seed: int, args) -> dict:
    byzantine = rule != "clean"
    s = p2pfl.run_cluster(topology, dataset="digits", rounds=args.rounds, seed=seed,
                          robust="none" if rule == "clean" else rule, quiet=True,
                          in_process=True, eval_every=args.rounds,
                          profiles=args.profiles if byzantine else None,
                          out=os.path.join(args.out, "runs", f"{name.split()[0]}-{rule}-{seed}")
                          ).summary
    key = "accuracy_mean_honest" if byzantine else "accuracy_mean"
    return {"topology": name, "rule": rule, "seed": seed, "accuracy": s[key],
            "dropped_non_finite": s["dropped"].get("undecodable", 0),
            "failed_nodes": len(s["failed_nodes"]), "wall_s": s["wall_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/robust_schedules")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--profiles", default=os.path.join(ROOT, "nodes", "torus_sign_flip.toml"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    topologies = {"torus:4x4": "torus:4x4", "one_peer_exponential:16": "one_peer_exponential:16",
                  "dynamic random_regular:4:16":
                      f"dynamic:{dynamic_file(args.out, 16, args.rounds)}"}
    rows = []
    for name, spec in topologies.items():
        for rule in RULES:
            if name.startswith("one_peer") and rule.startswith("trimmed"):
                continue  # one neighbour a round: nothing to trim (refused)
            for seed in args.seeds:
                row = run(name, spec, rule, seed, args)
                print(f"{name:28s} {rule:13s} seed {seed}: {row['accuracy']:.4f}, "
                      f"{row['dropped_non_finite']} dropped", flush=True)
                rows.append(row)
    lines = ["| topology | clean (no Byzantine nodes) | `--robust none` | `clip:0.5` | "
             "`trimmed:0.25` |", "|---|---|---|---|---|"]
    for name in topologies:
        cells = [", ".join(f"{r['accuracy']:.4f}" for r in rows
                           if r["topology"] == name and r["rule"] == rule) or "refused"
                 for rule in RULES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(args.out, "results.json"),
                      {"commit": commit_of(ROOT, dirty=True), "args": vars(args), "rows": rows})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
