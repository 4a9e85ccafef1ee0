"""Gossip learning against federated averaging, on the same nodes, with and without churn.

    python benchmarks/gossip_vs_fl.py

The shape of Hegedűs, Danner and Jelasity's comparison (DAIS 2019; JPDC 2021,
"Decentralized learning works"): the same N nodes, the same data shards and
the same emulated uplinks run

* gossip learning (``--algorithm gossip-learning``, asynchronous: each wake-up
  pushes the model to one random online neighbour, which merges it by age), and
* FedAvg (``--mode fedavg``, the same N nodes as workers plus a coordinator),

each without churn and under one availability trace (``--availability``).
Both get about the same byte budget and the same SGD steps: a gossip wake-up
sends one model, a FedAvg round sends two per worker (down and up), so gossip
runs twice the rounds with half the local steps (5 against FedAvg's 10, both
at lr 0.05).  The trace is synthetic (exponential online and offline sessions,
``trace.csv``, written by this script): the smartphone trace of the paper is
not available here.  Every figure is measured from the runs' metrics.

The nodes' uplinks are emulated (``--link`` values, through a profile); the
FedAvg coordinator's is not, as for a server in a data centre.

Writes OUT/table.md, OUT/results.json, OUT/accuracy_vs_time.png,
OUT/accuracy_vs_mb.png and OUT/trace.csv.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import p2pfl  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.plot import plot_curves  # noqa: E402


def write_trace(path: str, nodes: int, on_s: float, off_s: float, horizon: float,
                seed: int) -> float:
    """Exponential sessions per node (start in the stationary state); return the
    measured share of node-time offline."""
    rng = np.random.default_rng(seed)
    rows, offline = [], 0.0
    for node in range(nodes):
        t, down = 0.0, rng.random() < off_s / (on_s + off_s)
        while t < horizon:
            length = rng.exponential(off_s if down else on_s)
            if down:
                end = min(t + length, horizon)
                if round(end, 3) > round(t, 3):
                    rows.append(f"{node},{t:.3f},{end:.3f}")
                    offline += end - t
            t += length
            down = not down
    with open(path, "w") as fh:
        fh.write("node,offline_start_s,offline_end_s\n" + "\n".join(rows) + "\n")
    return offline / (nodes * horizon)


def curves(metrics: list, nodes: int) -> tuple:
    """Mean accuracy of the learners (each one's latest) against wall time and MB sent,
    from when at least half of the N nodes have reported one (offline nodes do not)."""
    latest, sent = {}, 0
    times, mbs, accs = [], [], []
    for r in sorted(metrics, key=lambda r: r["wall_s"]):
        sent += r["bytes_sent"]
        if r.get("role") in ("gossip", "worker") and r.get("accuracy") is not None:
            latest[r["node"]] = r["accuracy"]
            if len(latest) >= max(1, nodes // 2):
                times.append(r["wall_s"])
                mbs.append(sent / 1e6)
                accs.append(float(np.mean(list(latest.values()))))
    return times, mbs, accs


def first(xs: list, accs: list, target: float):
    return next((x for x, a in zip(xs, accs) if a >= target), None)


def at(xs: list, accs: list, x: float):
    """The mean accuracy at the last point with abscissa <= x."""
    got = [a for xx, a in zip(xs, accs) if xx <= x]
    return got[-1] if got else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/gossip_vs_fl")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--fl-rounds", type=int, default=40)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--partition", default="iid")
    ap.add_argument("--link", default="up_mbps=2,latency_ms=20")
    ap.add_argument("--churn", default="6:2", help="ON_S:OFF_S of the synthetic trace")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    on_s, off_s = (float(v) for v in args.churn.split(":"))
    trace = os.path.join(args.out, "trace.csv")
    share = write_trace(trace, args.nodes, on_s, off_s, 600.0, args.seed)
    # The nodes' uplinks come from a profile, so that the coordinator (not a node of
    # the profile) keeps an unemulated link, as a data-centre server would.
    profile = os.path.join(args.out, "links.toml")
    with open(profile, "w") as fh:
        fh.write(f"[default]\nlink = {{ {', '.join(_toml_pairs(args.link))} }}\n")
    common = dict(dataset=args.dataset, partition=args.partition, profiles=profile,
                  seed=args.seed, quiet=True)
    runs = {
        "gossip learning": dict(topology=f"complete:{args.nodes}", algorithm="gossip-learning",
                                rounds=2 * args.fl_rounds, eval_every=2, local_steps=5,
                                lr=0.05),
        "FedAvg": dict(mode="fedavg", nodes=args.nodes, rounds=args.fl_rounds,
                       local_steps=10, lr=0.05),
    }
    rows, by_time, by_mb = [], {}, {}
    for churn in (False, True):
        for name, options in runs.items():
            label = f"{name}{', churn' if churn else ''}"
            extra = {"availability": trace} if churn else {}
            res = p2pfl.run_cluster(**common, **options, **extra,
                                    out=os.path.join(args.out, "runs", label.replace(", ", "_")
                                                     .replace(" ", "_")))
            s = res.summary
            times, mbs, accs = curves(res.metrics, args.nodes)
            by_time[label], by_mb[label] = (times, accs), (mbs, accs)
            run_s = max(r["wall_s"] for r in res.metrics)
            offline = _periods_before(trace, run_s) if churn else 0
            rows.append({"run": label, "final_accuracy": accs[-1] if accs else None,
                         "best_accuracy": max(accs) if accs else None,
                         "mb_total": s["bytes_sent_total"] / 1e6,
                         "wall_s": run_s,
                         "time_to_target_s": first(times, accs, args.target),
                         "mb_to_target": first(mbs, accs, args.target),
                         "offline_periods": offline, "failed_nodes": len(s["failed_nodes"]),
                         "curve_time": [times, accs], "curve_mb": [mbs, accs]})
            r = rows[-1]
            print(f"{label:24s} final {_fmt(r['final_accuracy'], '.4f')}  {r['mb_total']:.2f} MB  "
                  f"{r['wall_s']:.1f} s  to {args.target}: {r['time_to_target_s']} s, "
                  f"{r['mb_to_target']} MB", flush=True)
    budget = min(r["mb_total"] for r in rows)
    for r in rows:
        r["accuracy_at_equal_mb"] = at(*r["curve_mb"], budget)
    write_report(args, rows, share, budget)
    plot_curves(by_time, os.path.join(args.out, "accuracy_vs_time.png"), "wall time (s)",
                "mean accuracy of the nodes", title="gossip learning vs FedAvg")
    plot_curves(by_mb, os.path.join(args.out, "accuracy_vs_mb.png"), "MB sent (all nodes)",
                "mean accuracy of the nodes", title="gossip learning vs FedAvg")
    return 0


def _periods_before(trace: str, t: float) -> int:
    """Offline periods of the trace that began before ``t`` (while the run ran)."""
    with open(trace) as fh:
        return sum(1 for row in list(fh)[1:] if float(row.split(",")[1]) < t)


def _toml_pairs(link: str) -> list:
    return [f"{k} = {float(v)}" for k, v in (kv.split("=") for kv in link.split(","))]


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def write_report(args, rows: list, share: float, budget: float) -> None:
    lines = [f"{args.nodes} nodes, {args.dataset} ({args.partition}), every node's uplink "
             f"`{args.link}` (the FedAvg coordinator's is not emulated); FedAvg {args.fl_rounds} rounds, gossip learning "
             f"{2 * args.fl_rounds} wake-ups per node. Churn: synthetic trace (exponential "
             f"sessions, mean online {args.churn.split(':')[0]} s, offline "
             f"{args.churn.split(':')[1]} s; {share:.0%} of node-time offline). "
             f"Equal bytes: accuracy at {budget:.2f} MB, the smallest run's total. "
             "Run s: from the start signal to the last record.", "",
             "| run | final acc | acc at equal MB | MB sent | run s | s to "
             f"{args.target} | MB to {args.target} | offline periods in the run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {_fmt(r['final_accuracy'], '.4f')} | "
                     f"{_fmt(r['accuracy_at_equal_mb'], '.4f')} | {r['mb_total']:.2f} | "
                     f"{r['wall_s']:.1f} | {_fmt(r['time_to_target_s'])} | "
                     f"{_fmt(r['mb_to_target'], '.2f')} | {r['offline_periods']} |")
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(args.out, "results.json"),
                      {"args": vars(args), "offline_share": share, "rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
