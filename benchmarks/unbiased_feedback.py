"""Error feedback with unbiased codecs in the server modes: what ``--error-feedback
auto`` resolves to since this check (off for qsgd, terngrad and randk:P:scaled), against
keeping it (``on``, what ``auto`` meant before).

    python benchmarks/unbiased_feedback.py [--rounds 10] [--seeds 0]

Runs ``p2pfl cluster --mode MODE --nodes 4 --dataset digits --compression CODEC
--error-feedback on|off`` for fedavg and stc, and prints each run's final mean accuracy;
writes ``benchmarks/results/unbiased_feedback.json``.
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

from _results import write_results  # noqa: E402

CODECS = ("qsgd:4", "terngrad", "randk:0.1:scaled", "topk:0.05")


def one_run(mode: str, codec: str, feedback: str, rounds: int, seed: int, tmp: str) -> float:
    out = os.path.join(tmp, "run")
    subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "--mode", mode, "--nodes",
                    "4", "--dataset", "digits", "--compression", codec, "--error-feedback",
                    feedback, "--rounds", str(rounds), "--seed", str(seed), "-q", "--out",
                    out], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)["accuracy_mean"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for mode in ("fedavg", "stc"):
                for codec in CODECS:
                    acc = {ef: one_run(mode, codec, ef, args.rounds, seed, tmp)
                           for ef in ("on", "off")}
                    rows.append({"mode": mode, "codec": codec, "seed": seed, **acc})
                    print(f"seed {seed} {mode:6s} {codec:17s} accuracy with error feedback "
                          f"{acc['on']:.4f}, without {acc['off']:.4f}", flush=True)
    write_results("unbiased_feedback.json", {"rounds": args.rounds, "runs": rows})


if __name__ == "__main__":
    main()
