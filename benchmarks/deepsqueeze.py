"""DeepSqueeze against CHOCO-SGD with the same codecs: bytes to a target accuracy.

    python benchmarks/deepsqueeze.py [--rounds 300] [--target 0.85]
    python benchmarks/deepsqueeze.py --gammas 0.05 0.1 0.2 0.4 [--codecs sign ...]

Runs the compressed-gossip benchmark's setting (``benchmarks/compressed_gossip.py``:
torus:4x4, mnist1d, cnn, dirichlet:1.0, seed 3, in-process) with each quantiser under
``--algorithm choco`` and ``--algorithm deepsqueeze`` (where its plan takes the codec) at
their default γ, each run stopped once the mean test accuracy reaches the target.
Prints and writes the rounds and MB to the target, the best accuracy and the bits per
parameter:
benchmarks/results/deepsqueeze/table.md, results.json and accuracy_vs_mb.png.  With
``--gammas``, DeepSqueeze alone at each γ for each of ``--codecs`` (a sweep for its
default γ), written to benchmarks/results/deepsqueeze_gamma/.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.compressed_gossip import curve, run  # noqa: E402
from p2pfl.errors import ClusterError, UsageError  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.plot import plot_curves  # noqa: E402

CODECS = ["fp16", "quant:0.001+cabac", "quant:0.001+cabac:temporal", "uniform:4+cabac",
          "qsgd:16+cabac", "sign"]


def attempt(name: str, out: str, rounds: int, target: float, **options) -> dict | None:
    """One run of :func:`run`; a run whose every node failed is a row that says so, one
    the plan refuses (a codec DeepSqueeze takes no longer) is None."""
    try:
        return run(name, out, rounds, target, **options)
    except UsageError as exc:
        print(f"{name:34s} refused: {exc}", flush=True)
        return None
    except ClusterError as exc:
        pts = curve(exc.result.metrics) if exc.result is not None else []
        print(f"{name:34s} every node failed: {exc}", flush=True)
        return {"name": name, "compression": options["compression"],
                "algorithm": options["algorithm"], "rounds_to_target": None,
                "bytes_to_target": None, "best_accuracy": max((a for _, a, _ in pts),
                                                              default=0.0),
                "rounds_run": pts[-1][0] if pts else 0, "bits_per_param": None,
                "failed_nodes": 16, "curve": pts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/deepsqueeze")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--gammas", type=float, nargs="+")
    ap.add_argument("--codecs", nargs="+", default=CODECS)
    args = ap.parse_args(argv)
    if args.gammas:
        args.out = args.out.rstrip("/") + "_gamma"
    os.makedirs(args.out, exist_ok=True)
    if args.gammas:
        rows = [attempt(f"{codec} (deepsqueeze, γ {g})", args.out, args.rounds, args.target,
                        compression=codec, algorithm="deepsqueeze", gamma=g)
                for codec in args.codecs for g in args.gammas]
    else:
        rows = [attempt(f"{codec} ({alg})", args.out, args.rounds, args.target,
                        compression=codec, algorithm=alg)
                for codec in args.codecs for alg in ("choco", "deepsqueeze")]
    rows = [r for r in rows if r is not None]
    lines = [f"| run | rounds to {args.target} | MB to {args.target} | "
             "best accuracy | bits/param |", "|---|---|---|---|---|"]
    for r in rows:
        mb = f"{r['bytes_to_target'] / 1e6:.2f}" if r["bytes_to_target"] else "not reached"
        rnd = r["rounds_to_target"] or f">{r['rounds_run']}"
        note = f" ({r['failed_nodes']} node(s) failed)" if r["failed_nodes"] else ""
        bits = "-" if r["bits_per_param"] is None else f"{r['bits_per_param']:.3f}"
        lines.append(f"| {r['name']} | {rnd} | {mb} | {r['best_accuracy']:.3f}{note} | "
                     f"{bits} |")
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(args.out, "results.json"), {"target": args.target,
                                                               "rows": rows})
    series = {r["name"]: ([b / 1e6 for _, _, b in r["curve"]], [a for _, a, _ in r["curve"]])
              for r in rows}
    plot_curves(series, os.path.join(args.out, "accuracy_vs_mb.png"), "MB sent (all nodes)",
                "mean test accuracy", logx=True,
                title="CHOCO and DeepSqueeze: torus:4x4, mnist1d, cnn, dirichlet:1.0")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
