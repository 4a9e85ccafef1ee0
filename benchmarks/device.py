"""GPU against CPU on the mnist1d CNN cluster (issue 10, ``--device``).

    python benchmarks/device.py [--nodes 8] [--rounds 30] [--local-steps 10]

Runs ``p2pfl cluster --topology ring:N --dataset mnist1d --model cnn`` twice, with
``--device cpu`` and ``--device cuda``, one after the other in this run, and
prints each run's round time (``wall_s`` from summary.json, start-up excluded:
the time from the first round's start to the last record), accuracy and bytes, and
the speed-up as a ratio.  Writes benchmarks/results/device.json.  Without a CUDA
GPU it says so and writes nothing: there is no number to report.
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

from p2pfl.metrics import write_json_atomic  # noqa: E402


def run(device: str, args, out: str) -> dict:
    cmd = [sys.executable, "-m", "p2pfl.cli", "cluster", "--topology", f"ring:{args.nodes}",
           "--dataset", "mnist1d", "--model", "cnn", "--rounds", str(args.rounds),
           "--local-steps", str(args.local_steps), "--device", device, "-q", "--out", out]
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    last = max(r["wall_s"] for r in rows if r.get("wall_s") is not None)
    return {"device": device, "devices": s["devices"], "rounds_s": round(last, 3),
            "wall_s": s["wall_s"], "accuracy_mean": s["accuracy_mean"],
            "bytes_sent_total": s["bytes_sent_total"], "command": " ".join(cmd[2:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--local-steps", type=int, default=10)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("blocked: torch sees no CUDA GPU on this machine; nothing measured")
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in ("cpu", "cuda"):
            rows.append(run(device, args, os.path.join(tmp, device)))
            r = rows[-1]
            print(f"{device:5s} rounds {r['rounds_s']:8.2f} s  whole {r['wall_s']:8.2f} s  "
                  f"acc {r['accuracy_mean']:.4f}  {r['bytes_sent_total'] / 1e6:.2f} MB  "
                  f"{r['devices']}")
    speedup = rows[0]["rounds_s"] / rows[1]["rounds_s"]
    print(f"GPU speed-up of the rounds (CPU time / GPU time, same run): {speedup:.2f}x")
    out = os.path.join(ROOT, "benchmarks", "results", "device.json")
    write_json_atomic(out, {"gpu": torch.cuda.get_device_name(0), "runs": rows,
                            "speedup_rounds": round(speedup, 3)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
