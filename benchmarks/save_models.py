"""What ``--save-models`` costs: the same run with and without it, alternated.

    python benchmarks/save_models.py [--repeats 3] [--case NAME ...]

Cases:
- ``cnn8``: ``--topology ring:8 --dataset mnist1d --model cnn --rounds 10`` (8 models
  of the mnist1d CNN, 8 files);
- ``scale1024``: ``--in-process --topology random_regular:4:1024 --dataset mnist1d
  --rounds 10`` (1,024 files, one a node).

Each pair runs the case without, then with ``--save-models`` (the order alternates
from one pair to the next), each a fresh ``p2pfl cluster`` process timed from outside.
Prints each run's wall time (outside, and the summary's ``wall_s``), ``peak_rss_bytes``,
``control_bytes`` and the files written with their total size, then the medians and
the with/without ratios.  Writes benchmarks/results/save_models.json.
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

from benchmarks._results import commit_of  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402

CASES = {
    "cnn8": ["--topology", "ring:8", "--dataset", "mnist1d", "--model", "cnn",
             "--rounds", "10"],
    "scale1024": ["--in-process", "--topology", "random_regular:4:1024", "--dataset",
                  "mnist1d", "--rounds", "10"],
}
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "p2pfl")
P2PFL = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "p2pfl.cli"]


def one_run(flags: list, out: str, save: bool) -> dict:
    cmd = [*P2PFL, "cluster", *flags, "-q", "--out", out] + (["--save-models"] if save else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    folder = os.path.join(out, "models")
    files = os.listdir(folder) if os.path.isdir(folder) else []
    return {"save": save, "process_s": took, "wall_s": s["wall_s"],
            "peak_rss_bytes": s["peak_rss_bytes"], "control_bytes": s["control_bytes"],
            "misses_total": s["misses_total"], "accuracy_mean": s["accuracy_mean"],
            "models_saved": s.get("models_saved"), "files": len(files),
            "file_bytes": sum(os.path.getsize(os.path.join(folder, f)) for f in files)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    args = ap.parse_args()
    result = {"commit": commit_of(ROOT, dirty=True), "repeats": args.repeats, "cases": {}}
    for name in args.case or list(CASES):
        runs = []
        with tempfile.TemporaryDirectory(prefix="p2pfl-save-") as tmp:
            for i in range(args.repeats):
                for save in (False, True) if i % 2 == 0 else (True, False):
                    r = one_run(CASES[name], os.path.join(tmp, f"{i}-{int(save)}"), save)
                    runs.append(r)
                    print(f"  {name} {i} save={save}: {r['process_s']:.2f} s (run "
                          f"{r['wall_s']:.2f} s), peak RSS {r['peak_rss_bytes'] / 2**30:.2f} "
                          f"GiB, control {r['control_bytes'] / 1e6:.2f} MB, {r['files']} files"
                          f" {r['file_bytes'] / 1e6:.2f} MB, misses {r['misses_total']}",
                          flush=True)
        med = {}
        for save in (False, True):
            rows = [r for r in runs if r["save"] is save]
            med[save] = {k: statistics.median(r[k] for r in rows)
                         for k in ("process_s", "wall_s", "peak_rss_bytes", "control_bytes")}
        ratio = {k: med[True][k] / med[False][k] for k in med[True]}
        print(f"{name}: median process {med[False]['process_s']:.2f} -> "
              f"{med[True]['process_s']:.2f} s (x{ratio['process_s']:.3f}), peak RSS x"
              f"{ratio['peak_rss_bytes']:.3f}, control bytes x{ratio['control_bytes']:.2f}")
        result["cases"][name] = {"flags": CASES[name], "runs": runs, "without": med[False],
                                 "with": med[True], "ratio": ratio}
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "save_models.json"), result)


if __name__ == "__main__":
    main()
