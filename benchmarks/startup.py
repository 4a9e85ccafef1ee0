"""Start-up cost (issue 10): the whole `p2pfl cluster` process against `import torch`.

    python benchmarks/startup.py [--repeats 5]

Alternates ``python -c "import torch"`` and ``p2pfl cluster --topology ring:8 --dataset
digits --rounds 30`` (each a fresh process, timed from outside), and prints the medians,
their difference, the run's own ``wall_s`` and its accuracy.  Writes
benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl.metrics import read_metrics, write_json_atomic  # noqa: E402

FLAGS = ["--topology", "ring:8", "--dataset", "digits", "--rounds", "30", "-q"]


#: the installed `p2pfl` command beside this interpreter, as a user runs it
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "p2pfl")
P2PFL = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "p2pfl.cli"]


def timed(cmd: list) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch_s, cluster_s, walls, accs, rounds_s = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="p2pfl-startup-") as tmp:
        for i in range(args.repeats):
            torch_s.append(timed([sys.executable, "-c", "import torch"]))
            out = os.path.join(tmp, str(i))
            cluster_s.append(timed([*P2PFL, "cluster", *FLAGS, "--out", out]))
            with open(os.path.join(out, "summary.json")) as fh:
                s = json.load(fh)
            walls.append(s["wall_s"])
            accs.append(s["accuracy_mean"])
            recs = read_metrics(os.path.join(out, "metrics.jsonl"))
            rounds_s.append(max(r["wall_s"] for r in recs))  # the nodes' clock: start to end
            print(f"  {i}: import torch {torch_s[-1]:.2f} s | p2pfl cluster {cluster_s[-1]:.2f} s"
                  f" (run {s['wall_s']:.2f} s, rounds {rounds_s[-1]:.2f} s, accuracy "
                  f"{s['accuracy_mean']:.4f})", flush=True)
    med_t, med_c = statistics.median(torch_s), statistics.median(cluster_s)
    print(f"  median: import torch {med_t:.2f} s, p2pfl cluster {med_c:.2f} s: "
          f"{med_c - med_t:.2f} s more; plan-to-summary {statistics.median(walls):.2f} s, "
          f"rounds {statistics.median(rounds_s):.2f} s")
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "startup.json"), {
        "command": "p2pfl cluster " + " ".join(FLAGS), "import_torch_s": torch_s,
        "cluster_s": cluster_s, "run_wall_s": walls, "rounds_s": rounds_s, "accuracy": accs,
        "median_import_torch_s": med_t, "median_cluster_s": med_c,
        "median_excess_s": med_c - med_t})


if __name__ == "__main__":
    main()
