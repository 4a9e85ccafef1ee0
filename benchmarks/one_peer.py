"""Topologies that change every round against static ones.

    python benchmarks/one_peer.py [--nodes 16] [--rounds 200] [--target 0.8] [--seeds 3 4 5]
    python benchmarks/one_peer.py --algorithm deepsqueeze --compression quant:0.001+cabac

D-PSGD with whole fp32 models (or ``--algorithm deepsqueeze`` with a codec) on mnist1d
(cnn, label skew ``dirichlet:0.3``, in-process), on ``ring:N``, ``torus``,
``random_regular:4:N``, ``exponential:N``, ``complete:N``, ``one_peer_exponential:N``
(Ying et al., NeurIPS 2021: each round one peer, i + 2^k, and for N a power of two the
exact average every log2 N rounds of mixing) and a new random 4-regular graph each
round (a ``dynamic:FILE`` schedule written into OUT, one graph a round, seeded).  Each run
plays every round; from its records come the rounds and MB (all nodes) to the mean
test accuracy ``--target``, the accuracy of the last round, and the mean consensus
distance over the run (relative, ‖x_i − x̄‖ / ‖x̄‖, mean over nodes and evaluated rounds).
Writes benchmarks/results/one_peer/table.md, results.json, accuracy_vs_mb.png and
accuracy_vs_round.png (``--replot`` redraws the last two and the table from results.json).

    python benchmarks/one_peer.py --rounds 300 --seeds 3 4 5 --dynamic-weights 0.1 0.25

runs the new random 4-regular graph a round alone, with its Metropolis weights (1/5 an
edge) and with each weight W of one's own on every edge (``[u, v, W]`` in the file; the
self-weight 1 − 4W), into OUT_weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict

import networkx as nx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import p2pfl  # noqa: E402
from benchmarks.compressed_gossip import curve, to_target  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.plot import plot_curves  # noqa: E402


def topologies(n: int, args) -> list:
    """``(name, spec)`` pairs; ``dynamic`` is a file of a random 4-regular graph a round
    (seeded per round), written into OUT, beside the static ``random_regular:4:N``; with
    ``--dynamic-weights``, that file alone and one a weight."""
    side = math.isqrt(n)
    grid = [f"torus:{side}x{n // side}"] if side * (n // side) == n and side > 2 else []
    path = dynamic_file(args.out, n, args.rounds)
    dynamic = [(f"dynamic random_regular:4:{n}", f"dynamic:{path}")]
    if args.dynamic_weights:
        return dynamic + [(f"dynamic random_regular:4:{n} w={w:g}",
                           f"dynamic:{dynamic_file(args.out, n, args.rounds, w)}")
                          for w in args.dynamic_weights]
    specs = [f"ring:{n}", *grid, f"random_regular:4:{n}", f"exponential:{n}",
             f"complete:{n}", f"one_peer_exponential:{n}"]
    return [(s, s) for s in specs] + dynamic


def dynamic_file(out: str, n: int, rounds: int, weight: float | None = None) -> str:
    """A random 4-regular graph on ``n`` nodes a round, seeded per round, as a
    ``dynamic:`` file in ``out``: Metropolis weights, or ``weight`` on every edge."""
    tag = "" if weight is None else f"_w{weight:g}"
    path = os.path.join(out, f"dynamic_random_regular4_{n}{tag}.json")
    phases = [[[*e] if weight is None else [*e, weight]
               for e in nx.random_regular_graph(4, n, seed=1000 + k).edges()]
              for k in range(rounds)]
    with open(path, "w") as fh:
        json.dump({"nodes": n, "phases": phases}, fh)
    return path


def run(name: str, topology: str, seed: int, args) -> dict:
    res = p2pfl.run_cluster(topology, dataset="mnist1d", model="cnn",
                            algorithm=args.algorithm, compression=args.compression,
                            partition=args.partition, seed=seed, rounds=args.rounds,
                            eval_every=args.eval_every, in_process=True, quiet=True,
                            out=os.path.join(args.out, "runs",
                                             f"{name.replace(' ', '_')}-s{seed}"))
    s, pts = res.summary, curve(res.metrics)
    rnd, nbytes = to_target(pts, args.target)
    gossip = [r for r in res.metrics if r["role"] == "gossip"]
    dist = [r["consensus_distance_rel"] for r in gossip
            if r.get("consensus_distance_rel") is not None]
    row = {"topology": name, "seed": seed, "rounds_to_target": rnd,
           "bytes_to_target": nbytes, "final_accuracy": pts[-1][1],
           "messages_per_node_round": s["messages_sent_total"] / (s["nodes"] * args.rounds),
           "consensus_distance_rel_mean": float(np.mean(dist)) if dist else None,
           "bytes_sent_total": s["bytes_sent_total"], "wall_s": s["wall_s"],
           "spectral_gap": s["spectral_gap"], "misses": s["misses_total"], "curve": pts}
    print(f"{name:32s} seed {seed}  to {args.target}: round {str(rnd):>4s}, "
          f"{(nbytes or 0) / 1e6:8.2f} MB  final {row['final_accuracy']:.4f}  "
          f"dist {row['consensus_distance_rel_mean']:.4f}  {s['wall_s']:.0f} s", flush=True)
    return row


def table(rows: list, args) -> list:
    by = defaultdict(list)
    for r in rows:
        by[r["topology"]].append(r)
    lines = [f"| topology | gap (per round) | messages a node a round | rounds to {args.target} "
             f"| MB to {args.target} | accuracy at round {args.rounds} | consensus distance "
             "(rel., mean) |", "|---|---|---|---|---|---|---|"]
    for topo, rs in by.items():
        def cell(key, fmt):
            vals = [r[key] for r in rs]
            return ", ".join("missed" if v is None else fmt(v) for v in vals)
        lines.append(f"| {topo} | {rs[0]['spectral_gap']:.4g} | "
                     f"{rs[0]['messages_per_node_round']:.0f} | "
                     f"{cell('rounds_to_target', str)} | "
                     f"{cell('bytes_to_target', lambda b: f'{b / 1e6:.1f}')} | "
                     f"{cell('final_accuracy', lambda a: f'{a:.4f}')} | "
                     f"{cell('consensus_distance_rel_mean', lambda d: f'{d:.4f}')} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/one_peer")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--partition", default="dirichlet:0.3")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3])
    ap.add_argument("--algorithm", default="dpsgd",
                    help="dpsgd, or deepsqueeze with --compression (written to OUT_deepsqueeze)")
    ap.add_argument("--compression", default="none")
    ap.add_argument("--dynamic-weights", type=float, nargs="+", default=None,
                    help="the dynamic graph alone, and with each of these weights on every "
                         "edge (at most 0.25; written to OUT_weights)")
    ap.add_argument("--replot", action="store_true",
                    help="redraw the table and plots from OUT/results.json; run nothing")
    args = ap.parse_args(argv)
    if args.algorithm != "dpsgd" and not args.replot:
        args.out = args.out.rstrip("/") + f"_{args.algorithm}"
    if args.dynamic_weights and not args.replot:
        args.out = args.out.rstrip("/") + "_weights"
    os.makedirs(args.out, exist_ok=True)
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as fh:
            saved = json.load(fh)
        args = argparse.Namespace(**dict(saved["args"], out=args.out))
        rows = saved["rows"]
    else:
        rows = [run(name, spec, seed, args) for seed in args.seeds
                for name, spec in topologies(args.nodes, args)]
    lines = table(rows, args)
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(args.out, "results.json"),
                      {"args": {k: v for k, v in vars(args).items() if k != "replot"},
                       "rows": rows})
    plots(rows, args)
    print("\n".join(lines))
    return 0


def plots(rows: list, args) -> None:
    """Accuracy against MB sent and against rounds, one line a topology (the first seed's
    run: the table has every seed)."""
    first = [r for r in rows if r["seed"] == rows[0]["seed"]]
    algorithm = getattr(args, "algorithm", "dpsgd")  # results.json of before the option
    rule = "D-PSGD" if algorithm == "dpsgd" else f"{algorithm}, {args.compression}"
    title = (f"{rule} on {args.nodes} nodes: mnist1d, cnn, {args.partition}, "
             f"seed {rows[0]['seed']}")
    for name, x, label, logx in (("accuracy_vs_mb.png", 2, "MB sent (all nodes)", True),
                                 ("accuracy_vs_round.png", 0, "round", False)):
        series = {r["topology"]: ([p[x] / (1e6 if x == 2 else 1) for p in r["curve"]],
                                  [p[1] for p in r["curve"]]) for r in first}
        plot_curves(series, os.path.join(args.out, name), label, "mean test accuracy",
                    logx=logx, title=title)


if __name__ == "__main__":
    sys.exit(main())
