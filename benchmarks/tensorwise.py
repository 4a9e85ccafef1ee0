"""Per-tensor exchange (issue 11): PowerSGD that really compresses, and k per tensor
against one k for the whole model in server-mode STC.

    python benchmarks/tensorwise.py [--rounds 60] [--seeds 0 1]

Table 1, PowerSGD rank 2 on the mnist1d CNN (8,010 parameters: conv kernels coded
as matrices, biases dense): gossip on ring:8 (D-PSGD dense against CHOCO with
``powersgd:2``, ``powersgd:2+fp16`` and ``powersgd:2:alternate``, one factor a
message as in PowerGossip), and server mode (FedAvg dense against ``--mode stc
--compression powersgd:2``, error feedback both ways, with fp16 factors, and with
``powersgd:2:alternate`` upstream), 10 workers.
Table 2, server STC at p = 0.01 on digits (MLP) and on the mnist1d CNN: ``stc:0.01``
(k per tensor, the STC paper's choice and our default) against ``stc:0.01:global``.

Every figure is measured in this run: bytes from summary.json (bytes_sent_total,
all node-to-node and coordinator traffic with headers), accuracy the mean final
test accuracy over nodes (gossip) or of the global model (server), averaged over
the seeds.  Writes benchmarks/results/tensorwise/tensorwise.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl import run_cluster  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402

CNN = dict(dataset="mnist1d", model="cnn")


def _final(summary: dict) -> float:
    g = summary.get("global_accuracy_per_round")
    if g:
        return g[-1][1]
    return summary["accuracy_mean"]


def measure(tmp: str, name: str, seeds: list, **options) -> dict:
    accs, sent = [], []
    for seed in seeds:
        s = run_cluster(out=os.path.join(tmp, f"{name}-{seed}"), seed=seed, quiet=True,
                        **options).summary
        accs.append(_final(s))
        sent.append(s["bytes_sent_total"])
    row = {"name": name, "options": options, "accuracy": sum(accs) / len(accs),
           "accuracies": accs, "bytes_sent_total": sum(sent) / len(sent)}
    print(f"{name:34s} acc {row['accuracy']:.4f}  {row['bytes_sent_total'] / 1e6:8.3f} MB",
          flush=True)
    return row


def powersgd_table(tmp: str, rounds: int, seeds: list) -> list:
    gossip = dict(CNN, topology="ring:8", rounds=rounds)
    server = dict(CNN, nodes=10, rounds=rounds)
    rows = [measure(tmp, "gossip dense (dpsgd)", seeds, **gossip),
            measure(tmp, "gossip choco powersgd:2", seeds, compression="powersgd:2", **gossip),
            measure(tmp, "gossip choco powersgd:2+fp16", seeds,
                    compression="powersgd:2+fp16", **gossip),
            measure(tmp, "gossip choco powersgd:2:alternate", seeds,
                    compression="powersgd:2:alternate", **gossip),
            measure(tmp, "server fedavg dense", seeds, mode="fedavg", **server),
            measure(tmp, "server powersgd:2 (EF both ways)", seeds, mode="stc",
                    compression="powersgd:2", compression_down="powersgd:2", **server),
            measure(tmp, "server powersgd:2+fp16 (EF both ways)", seeds, mode="stc",
                    compression="powersgd:2+fp16", compression_down="powersgd:2+fp16",
                    **server),
            measure(tmp, "server powersgd:2:alternate up, powersgd:2 down", seeds, mode="stc",
                    compression="powersgd:2:alternate", compression_down="powersgd:2",
                    **server)]
    for dense, rest in ((rows[0], rows[1:4]), (rows[4], rows[5:])):
        for r in rest:
            r["fewer_bytes_than_dense"] = dense["bytes_sent_total"] / r["bytes_sent_total"]
    return rows


def scope_table(tmp: str, rounds: int, seeds: list) -> list:
    rows = []
    for data, extra in (("digits mlp", dict(dataset="digits")), ("mnist1d cnn", CNN)):
        for scope in ("", ":global"):
            spec = f"stc:0.01{scope}+golomb"
            rows.append(measure(tmp, f"stc {data} {spec}", seeds, mode="stc", nodes=10,
                                rounds=rounds, compression=spec, **extra))
    return rows


def _md(rows: list, extra: str | None = None) -> str:
    head = ["run", "accuracy", "MB sent"] + ([extra] if extra else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['accuracy']:.4f}", f"{r['bytes_sent_total'] / 1e6:.3f}"]
        if extra:
            v = r.get("fewer_bytes_than_dense")
            cells.append(f"{v:.1f}x" if v else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tables", nargs="+", default=["powersgd", "scope"],
                    help="which tables to measure now (the others are kept from the last run)")
    args = ap.parse_args()
    out = os.path.join(ROOT, "benchmarks", "results", "tensorwise")
    os.makedirs(out, exist_ok=True)
    last = {}
    if os.path.exists(os.path.join(out, "tensorwise.json")):
        with open(os.path.join(out, "tensorwise.json")) as fh:
            last = json.load(fh)
    with tempfile.TemporaryDirectory() as tmp:
        power = (powersgd_table(tmp, args.rounds, args.seeds) if "powersgd" in args.tables
                 else last["powersgd"])
        scope = (scope_table(tmp, args.rounds, args.seeds) if "scope" in args.tables
                 else last["k_scope"])
    write_json_atomic(os.path.join(out, "tensorwise.json"),
                      {"rounds": args.rounds, "seeds": args.seeds, "powersgd": power,
                       "k_scope": scope})
    text = (f"PowerSGD rank 2, mnist1d CNN, {args.rounds} rounds, seeds {args.seeds}\n\n"
            + _md(power, "fewer bytes than dense") +
            f"\nServer STC p = 0.01, k per tensor vs global, {args.rounds} rounds\n\n"
            + _md(scope))
    with open(os.path.join(out, "tensorwise.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
