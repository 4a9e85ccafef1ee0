"""Bytes to a target accuracy: dense gossip against compressed gossip (issue 3).

    python benchmarks/compressed_gossip.py

Part 1 (the headline) runs the issue's command twice::

    p2pfl cluster --topology torus:4x4 --dataset mnist1d --model cnn \\
        --partition dirichlet:1.0 --seed 3 --rounds 300 [--compression stc:0.05+golomb]

and counts the bytes sent by all nodes until the mean test accuracy first
reaches 0.85.  Part 2 sweeps codecs with and without error feedback (the
residual x − x̂ kept or discarded) and plots accuracy against MB sent.

Runs stop once the target is reached (``--target-accuracy``), which changes
nothing before that round.  Every figure printed is measured by this run;
results go to OUT/table.md, OUT/results.json and OUT/accuracy_vs_mb.png.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import p2pfl  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.plot import plot_curves  # noqa: E402

BASE = dict(topology="torus:4x4", dataset="mnist1d", model="cnn", partition="dirichlet:1.0",
            seed=3)
SWEEP = ["stc:0.05+golomb", "topk:0.05+golomb", "sbc:0.05+golomb", "randk:0.05", "sign",
         "qsgd:16+cabac", "uniform:4+cabac", "fp16"]


def curve(metrics: list) -> list:
    """``[(round, mean accuracy, cumulative bytes sent by all nodes), ...]``."""
    acc, sent = defaultdict(list), defaultdict(int)
    for r in metrics:
        sent[r["round"]] += r["bytes_sent"]
        if r["accuracy"] is not None:
            acc[r["round"]].append(r["accuracy"])
    out, total = [], 0
    for rnd in sorted(sent):
        total += sent[rnd]
        if acc[rnd]:
            out.append((rnd, float(np.mean(acc[rnd])), total))
    return out


def to_target(points: list, target: float):
    """(round, bytes) when the mean accuracy first reaches ``target``, else (None, None)."""
    for rnd, acc, total in points:
        if acc >= target:
            return rnd, total
    return None, None


def run(name: str, out: str, rounds: int, target: float, **options) -> dict:
    res = p2pfl.run_cluster(**BASE, **options, rounds=rounds, target_accuracy=target,
                            in_process=True, quiet=True, out=os.path.join(out, "runs", name))
    pts = curve(res.metrics)
    rnd, nbytes = to_target(pts, target)
    s = res.summary
    row = {"name": name, "compression": options.get("compression", "none"),
           "error_feedback": options.get("error_feedback", "auto"),
           "algorithm": s["algorithm"], "rounds_to_target": rnd, "bytes_to_target": nbytes,
           "best_accuracy": max(a for _, a, _ in pts), "rounds_run": pts[-1][0],
           "bits_per_param": s["bits_per_param_mean"], "wall_s": s["wall_s"],
           "failed_nodes": len(s["failed_nodes"]), "curve": pts}
    bits = s["bits_per_param_mean"]
    failed = f"  {len(s['failed_nodes'])} node(s) failed" if s["failed_nodes"] else ""
    print(f"{name:34s} rounds {str(rnd):>4s}  bytes {nbytes or 0:>12,d}  best acc "
          f"{row['best_accuracy']:.3f}  bits/param {bits if bits is None else round(bits, 3)}  "
          f"{s['wall_s']:.0f} s{failed}", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/compressed_gossip")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--sweep-rounds", type=int, default=150)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dense = run("dense (none)", args.out, args.rounds, args.target)
    stc = run("stc:0.05+golomb (choco)", args.out, args.rounds, args.target,
              compression="stc:0.05+golomb")
    rows = [dense, stc]
    ratio = (dense["bytes_to_target"] / stc["bytes_to_target"]
             if dense["bytes_to_target"] and stc["bytes_to_target"] else None)
    print(f"\nbytes to {args.target}: dense / stc = {ratio:.1f}x" if ratio else "target missed")
    if not args.no_sweep:
        for spec in SWEEP:
            for ef in ("on", "off"):
                rows.append(run(f"{spec} ef={ef}", args.out, args.sweep_rounds, args.target,
                                compression=spec, error_feedback=ef))
    write_report(args.out, rows, ratio, args.target)
    return 0


def write_report(out: str, rows: list, ratio, target: float) -> None:
    lines = [f"| run | algorithm | rounds to {target} | MB to {target} | x fewer than dense "
             "| best accuracy | bits/param |", "|---|---|---|---|---|---|---|"]
    dense = rows[0]["bytes_to_target"]
    for r in rows:
        mb = f"{r['bytes_to_target'] / 1e6:.3f}" if r["bytes_to_target"] else "not reached"
        x = f"{dense / r['bytes_to_target']:.1f}" if dense and r["bytes_to_target"] else "-"
        rnd = r["rounds_to_target"] if r["rounds_to_target"] else f">{r['rounds_run']}"
        bits = "-" if r["bits_per_param"] is None else f"{r['bits_per_param']:.3f}"
        note = f" ({r['failed_nodes']} node(s) failed)" if r["failed_nodes"] else ""
        lines.append(f"| {r['name']} | {r['algorithm']} | {rnd} | {mb} | {x} | "
                     f"{r['best_accuracy']:.3f}{note} | {bits} |")
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(out, "results.json"), {"ratio_dense_over_stc": ratio,
                                                          "rows": rows})
    series = {r["name"]: ([b / 1e6 for _, _, b in r["curve"]], [a for _, a, _ in r["curve"]])
              for r in rows}
    plot_curves(series, os.path.join(out, "accuracy_vs_mb.png"), "MB sent (all nodes)",
                "mean test accuracy", logx=True,
                title="torus:4x4, mnist1d, cnn, dirichlet:1.0")
    print("\n".join(lines))
    print(f"\nwritten: {out}/table.md, results.json, accuracy_vs_mb.png")


if __name__ == "__main__":
    sys.exit(main())
