"""Long-run stability of compressed gossip against dense gossip, per seed.

    python benchmarks/gossip_stability.py --seeds 3 11 1 \\
        --out benchmarks/results/compressed_gossip/stability

For each seed it runs (or, with ``--runs DIR``, reads ``DIR/{dense,stc}_sSEED``)::

    p2pfl cluster --topology torus:4x4 --dataset mnist1d --model cnn \\
        --partition dirichlet:1.0 --seed SEED --rounds 300 [--compression stc:0.05+golomb]

(``--variants stc_gamma0.3`` adds ``--gamma 0.3``, the former default) and
checks, from each run's ``metrics.jsonl``, that compressed gossip

* does not drift apart: median consensus distance at the last round <= at round 50;
* leaves no node behind: no node ends more than 10 points below the mean accuracy;
* does not collapse late: final mean accuracy within 2 points of the run's best;
* stays cheap: bytes to 0.85 mean accuracy at least x50 below dense gossip's.

Every figure printed is measured from the metrics files; results go to
OUT/table.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from p2pfl.metrics import read_metrics, write_json_atomic  # noqa: E402

BASE = dict(topology="torus:4x4", dataset="mnist1d", model="cnn", partition="dirichlet:1.0")
CODEC = "stc:0.05+golomb"
#: Compressed runs to check, by run-folder prefix: the defaults, and the former γ = 6p.
VARIANTS = {"stc": {"compression": CODEC},
            "stc_gamma0.3": {"compression": CODEC, "gamma": 0.3}}
LIMITS = {"node_gap": 0.10, "final_drop": 0.02, "bytes_ratio": 50.0}


def per_round(metrics: list) -> dict:
    """``{round: {"acc": [...], "cd": [...], "rel": [...], "bytes": int}}``."""
    rounds = defaultdict(lambda: {"acc": [], "cd": [], "rel": [], "bytes": 0})
    for r in metrics:
        row = rounds[r["round"]]
        row["bytes"] += r["bytes_sent"]
        if r.get("accuracy") is not None:
            row["acc"].append(r["accuracy"])
        if r.get("consensus_distance") is not None:
            row["cd"].append(r["consensus_distance"])
        if r.get("consensus_distance_rel") is not None:
            row["rel"].append(r["consensus_distance_rel"])
    return dict(rounds)


def _median(values):
    return float(np.median(values)) if values else None


def bytes_to(rounds: dict, target: float):
    """(round, cumulative bytes of all nodes) when the mean accuracy first reaches target."""
    total = 0
    for rnd in sorted(rounds):
        total += rounds[rnd]["bytes"]
        acc = rounds[rnd]["acc"]
        if acc and np.mean(acc) >= target:
            return rnd, total
    return None, None


def figures(metrics: list, target: float, early: int = 50) -> dict:
    """The measured figures of one run."""
    rounds = per_round(metrics)
    last = max(rounds)
    means = {r: float(np.mean(v["acc"])) for r, v in rounds.items() if v["acc"]}
    final = rounds[last]["acc"]
    rnd, nbytes = bytes_to(rounds, target)
    return {
        "rounds": last,
        f"cd_median_r{early}": _median(rounds.get(early, {}).get("cd", [])),
        "cd_median_last": _median(rounds[last]["cd"]),
        "cd_max_last": max(rounds[last]["cd"]) if rounds[last]["cd"] else None,
        f"cd_rel_median_r{early}": _median(rounds.get(early, {}).get("rel", [])),
        "cd_rel_median_last": _median(rounds[last]["rel"]),
        "final_mean": float(np.mean(final)), "final_min": float(np.min(final)),
        "node_gap": float(np.mean(final) - np.min(final)),
        "best_mean": max(means.values()), "best_round": max(means, key=means.get),
        "rounds_to_target": rnd, "bytes_to_target": nbytes,
    }


def checks(comp: dict, dense: dict, early: int = 50) -> dict:
    """Pass/fail of the four conditions for one seed."""
    ratio = (dense["bytes_to_target"] / comp["bytes_to_target"]
             if dense["bytes_to_target"] and comp["bytes_to_target"] else None)
    return {
        "consensus_not_growing": comp["cd_median_last"] <= comp[f"cd_median_r{early}"],
        "no_node_left_behind": comp["node_gap"] <= LIMITS["node_gap"],
        "no_late_collapse": comp["best_mean"] - comp["final_mean"] <= LIMITS["final_drop"],
        "bytes_ratio": ratio,
        "cheap": ratio is not None and ratio >= LIMITS["bytes_ratio"],
    }


def run_or_read(name: str, runs: str, seed: int, rounds: int, fresh: bool, **options) -> list:
    path = os.path.join(runs, f"{name}_s{seed}")
    if fresh or not os.path.exists(os.path.join(path, "metrics.jsonl")):
        import p2pfl

        p2pfl.run_cluster(**BASE, seed=seed, rounds=rounds, in_process=True, quiet=True,
                          out=path, **options)
    return read_metrics(os.path.join(path, "metrics.jsonl"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 11, 1])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--runs", default=None, help="run folders (default OUT/runs)")
    ap.add_argument("--fresh", action="store_true", help="rerun even if a run folder exists")
    ap.add_argument("--variants", nargs="+", default=["stc"], choices=sorted(VARIANTS))
    ap.add_argument("--out", default="benchmarks/results/compressed_gossip/stability")
    ap.add_argument("--note", default="", help="a line written above the table")
    args = ap.parse_args(argv)
    runs = args.runs or os.path.join(args.out, "runs")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for seed in args.seeds:
        dense = figures(run_or_read("dense", runs, seed, args.rounds, args.fresh), args.target)
        for name in args.variants:
            comp = figures(run_or_read(name, runs, seed, args.rounds, args.fresh,
                                       **VARIANTS[name]), args.target)
            rows.append({"seed": seed, "variant": name, "options": VARIANTS[name],
                         "compressed": comp, "dense": dense, "checks": checks(comp, dense)})
            print(line(rows[-1]), flush=True)
    write_report(args.out, rows, args.target, args.note)
    return 0 if all(all(v for k, v in r["checks"].items() if k != "bytes_ratio")
                    for r in rows) else 1


def line(row: dict) -> str:
    c, d, k = row["compressed"], row["dense"], row["checks"]
    ratio = f"{k['bytes_ratio']:.1f}" if k["bytes_ratio"] else "-"
    return (f"{row['variant']:13s} seed {row['seed']:3d}  cd median r50 {c['cd_median_r50']:.3f} -> r{c['rounds']} "
            f"{c['cd_median_last']:.3f} (rel {c['cd_rel_median_r50'] or 0:.4f} -> "
            f"{c['cd_rel_median_last'] or 0:.4f})  node gap {c['node_gap']:.3f}  final "
            f"{c['final_mean']:.3f} best {c['best_mean']:.3f}  bytes to target "
            f"{c['bytes_to_target'] or 0:,d} vs dense {d['bytes_to_target'] or 0:,d} (x{ratio})  "
            + ("PASS" if all(v for n, v in k.items() if n != "bytes_ratio") else "FAIL"))


def write_report(out: str, rows: list, target: float, note: str = "") -> None:
    head = ("| run | seed | cd median r50 → last | rel r50 → last | worst node gap | final / best mean "
            f"| rounds to {target} | bytes to {target}: compressed / dense | × | verdict |")
    lines = [head, "|" + "---|" * 10]
    for row in rows:
        c, d, k = row["compressed"], row["dense"], row["checks"]
        ratio = f"{k['bytes_ratio']:.1f}" if k["bytes_ratio"] else "-"
        failed = [n for n, v in k.items() if n != "bytes_ratio" and not v]
        lines.append(
            f"| {row['variant']} | {row['seed']} | {c['cd_median_r50']:.3f} → {c['cd_median_last']:.3f} | "
            f"{c['cd_rel_median_r50'] or 0:.4f} → {c['cd_rel_median_last'] or 0:.4f} | "
            f"{c['node_gap']:.3f} | {c['final_mean']:.3f} / {c['best_mean']:.3f} | "
            f"{c['rounds_to_target']} / {d['rounds_to_target']} | "
            f"{c['bytes_to_target'] or 0:,d} / {d['bytes_to_target'] or 0:,d} | {ratio} | "
            f"{'pass' if not failed else 'FAIL: ' + ', '.join(failed)} |")
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write((note + "\n\n" if note else "") + "\n".join(lines) + "\n")
    write_json_atomic(os.path.join(out, "results.json"),
                      {"base": BASE, "target": target, "limits": LIMITS, "note": note,
                       "rows": rows})
    print("\n".join(lines))
    print(f"\nwritten: {out}/table.md, results.json")


if __name__ == "__main__":
    sys.exit(main())
