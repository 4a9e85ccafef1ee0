"""Server-mode tables: STC vs FedAvg, CFL (clustered and Byzantine), FD/CFD.

One command regenerates each table from fresh runs; every number printed is
measured (bytes counted by the endpoints, accuracy from the runs' records)::

    python benchmarks/bench_server.py --table stc --out benchmarks/results/server
    python benchmarks/bench_server.py --table cfl --out benchmarks/results/server
    python benchmarks/bench_server.py --table cfd --out benchmarks/results/server
    python benchmarks/bench_server.py --table all --out benchmarks/results/server

Each table is written as ``<out>/<table>.md`` and ``<out>/<table>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from p2pfl import run_cluster  # noqa: E402

BASE = dict(nodes=10, dataset="digits", quiet=True, in_process=True)


def run(tmp: str, name: str, **options) -> dict:
    """One run; returns its summary plus per-round cumulative bytes and accuracy."""
    res = run_cluster(**dict(BASE, out=os.path.join(tmp, name), **options))
    s = res.summary
    coord = sorted((r for r in res.metrics if r.get("role") == "coordinator"),
                   key=lambda r: r["round"])
    acc = dict((r, a) for r, a in s["accuracy_per_round"])
    up = down = 0
    curve = []
    for r in coord:
        up += r["bytes_received"]
        down += r["bytes_sent"]
        curve.append({"round": r["round"], "up": up, "down": down,
                      "accuracy": acc.get(r["round"]), "global": r.get("global_accuracy")})
    s["curve"] = curve
    return s


def _md(headers: list, rows: list) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _acc_at_budget(curve: list, budget: float, key: str = "global"):
    best = None
    for p in curve:
        if p["up"] <= budget and p[key] is not None:
            best = p[key]
    return best


def table_stc(tmp: str, rounds: int) -> tuple[str, dict]:
    """Accuracy at equal upstream bytes on non-iid data (dirichlet:0.1)."""
    common = dict(partition="dirichlet:0.1", rounds=rounds)
    runs = {"FedAvg": run(tmp, "fedavg", mode="fedavg", **common),
            "STC p=0.01": run(tmp, "stc", mode="stc", compression="stc:0.01+golomb", **common),
            "FedAvg, 25% participation": run(tmp, "fedavg_p", mode="fedavg",
                                              participation=0.25, **common)}
    stc_up = runs["STC p=0.01"]["bytes_up_total"]
    budgets = [stc_up / 4, stc_up / 2, stc_up, stc_up * 10, stc_up * 100]
    rows = []
    for name, s in runs.items():
        rows.append([name, f"{s['accuracy_mean']:.3f}", f"{s['bytes_up_total'] / 1e3:.1f}",
                     f"{s['bytes_down_total'] / 1e3:.1f}"]
                    + [_fmt(_acc_at_budget(s["curve"], b)) for b in budgets])
    fa = runs["FedAvg"]["bytes_up_total"]
    headers = ["method", "final acc", "up kB", "down kB"] + [f"acc @ {b / 1e3:.1f} kB up"
                                                          for b in budgets]
    text = (f"## STC vs FedAvg, 10 workers, digits, dirichlet:0.1, {rounds} rounds\n\n"
            + _md(headers, rows)
            + f"\nSTC sends {fa / stc_up:.0f}x fewer upstream bytes than FedAvg. "
              "'acc @ B' is the global model's accuracy after the last round whose "
              "cumulative upstream bytes are <= B (- : no round fits).\n")
    return text, {k: _strip(v) for k, v in runs.items()}


def table_cfl(tmp: str, rounds: int) -> tuple[str, dict]:
    """FL vs CFL: label-permuted groups, and Byzantine / noisy / label-flip workers."""
    settings = {"groups:2": dict(partition="groups:2"), "clean": {}}
    for b in ("random", "noisy", "label_flip"):
        prof = os.path.join(tmp, f"{b}.toml")
        with open(prof, "w") as fh:
            fh.write("".join(f'[nodes.{i}]\nbehaviour = "{b}"\n' for i in (0, 1)))
        settings[b] = dict(profiles=prof)
    rows, data = [], {}
    for name, opts in settings.items():
        fl = run(tmp, f"fl_{name}", mode="fedavg", rounds=rounds, **opts)
        cfl = run(tmp, f"cfl_{name}", mode="cfl", rounds=rounds, **opts)
        data[name] = {"fedavg": _strip(fl), "cfl": _strip(cfl)}
        extra = (f"groups recovered: {sorted(map(sorted, cfl['clusters'])) == sorted(map(sorted, cfl['groups']))}"
                 if "groups" in cfl else f"clusters {cfl['clusters']}")
        rows.append([name, f"{fl['accuracy_clean_mean']:.3f}", f"{cfl['accuracy_clean_mean']:.3f}",
                     cfl.get("split_rounds"), extra])
    text = (f"## FL vs CFL, 10 workers, digits, {rounds} rounds "
            "(2 of 10 workers adversarial where named)\n\n"
            + _md(["setting", "FL acc (clean workers)", "CFL acc (clean workers)",
                   "split rounds", "clusters"], rows))
    return text, data


def table_cfd(tmp: str, rounds: int, target: float) -> tuple[str, dict]:
    """MB up and down to a target accuracy (rounds in brackets), CFD paper style."""
    runs = {"FedAvg": run(tmp, "fedavg", mode="fedavg", rounds=rounds),
            "FD": run(tmp, "fd", mode="fd", rounds=rounds),
            "CFD-1-1": run(tmp, "cfd", mode="cfd", rounds=rounds, fd_delta="off"),
            "CFD_Δ-1-1": run(tmp, "cfd_d", mode="cfd", rounds=rounds, fd_delta="on")}
    rows = []
    for name, s in runs.items():
        hit = next((p for p in s["curve"] if (p["accuracy"] or 0) >= target), None)
        to = (lambda k: f"{hit[k] / 1e6:.4f} ({hit['round']})") if hit else (lambda k: "not reached")
        rows.append([name, f"{s['accuracy_mean']:.3f}", to("up"), to("down"),
                     f"{s['bytes_up_total'] / 1e6:.4f}", f"{s['bytes_down_total'] / 1e6:.4f}"])
    fd, cfd, fa = (runs[k]["bytes_up_total"] for k in ("FD", "CFD_Δ-1-1", "FedAvg"))
    text = (f"## FedAvg vs FD vs CFD, 10 workers, digits, {rounds} rounds, target accuracy "
            f"{target}\n\n"
            + _md(["method", "final acc", "MB up to target (round)", "MB down to target (round)",
                   "MB up total", "MB down total"], rows)
            + f"\nCFD_Δ-1-1 sends {fd / cfd:.0f}x fewer upstream bytes than FD and "
              f"{fa / cfd:.0f}x fewer than FedAvg.  Accuracy: mean over workers of the model "
              "each holds.\n")
    return text, {k: _strip(v) for k, v in runs.items()}


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


def _strip(s: dict) -> dict:
    keep = ("mode", "accuracy_mean", "accuracy_min", "accuracy_clean_mean", "bytes_up_total",
            "bytes_down_total", "clusters", "split_rounds", "groups", "curve", "wall_s")
    return {k: s[k] for k in keep if k in s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", choices=["stc", "cfl", "cfd", "all"], default="all")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results", "server"))
    p.add_argument("--target", type=float, default=0.85, help="CFD table target accuracy")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    tables = {"stc": lambda t: table_stc(t, 50), "cfl": lambda t: table_cfl(t, 60),
              "cfd": lambda t: table_cfd(t, 20, args.target)}
    names = list(tables) if args.table == "all" else [args.table]
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            text, data = tables[name](tmp)
        print(text)
        with open(os.path.join(args.out, f"{name}.md"), "w") as fh:
            fh.write(text)
        with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
            json.dump(data, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
