"""How long a killed node is away under ``--restart on-failure``, and what its neighbours
wait for it.

    python benchmarks/restart_gap.py [--tree DIR] [--repeats 3]

Each run: ``p2pfl cluster --topology ring:3 --dataset digits --rounds 3000 --eval-every
100 --local-steps 1 --restart on-failure -q`` with the code of ``--tree`` (a checkout,
this one by default, on ``PYTHONPATH``); once node 1 has recorded 400 rounds (the run well
under way) its process is killed (SIGKILL).  Prints, per run: ``back_s``, the seconds from
the kill to the first record of node 1's new process (watched every 10 ms), and
``neighbour_gap_s``, the largest gap between two consecutive records of node 0 or 2
(their ``wall_s``), with the run's ``restarts`` and ``accuracy_mean``.  Appends to
``benchmarks/results/restart_gap.json`` (an entry of the same tree and commit replaced).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from _results import records, repeat_cases, tree_args

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "restart_gap.json")
FLAGS = ["--topology", "ring:3", "--dataset", "digits", "--rounds", "3000", "--eval-every",
         "100", "--local-steps", "1", "--restart", "on-failure", "-q"]


def _pid(out: str, node: int) -> int | None:
    try:
        with open(os.path.join(out, "nodes.json")) as fh:
            return next(n["pid"] for n in json.load(fh) if n["id"] == node)
    except (OSError, ValueError, StopIteration):
        return None


def one_run(tree: str, work: str) -> dict:
    out = os.path.join(work, "run")
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", *FLAGS, "--out",
                             out], cwd=tree, env=dict(os.environ, PYTHONPATH=tree),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while sum(r["node"] == 1 for r in records(out)) < 400:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the run ended early: {proc.stderr.read()[-500:]}")
            time.sleep(0.05)
        before = max(r["round"] for r in records(out) if r["node"] == 1)
        os.kill(_pid(out, 1), signal.SIGKILL)
        t_kill = time.monotonic()
        while not any(r["node"] == 1 and r["round"] > before + 1 for r in records(out)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"node 1 never came back: {proc.stderr.read()[-500:]}")
            time.sleep(0.01)
        back = time.monotonic() - t_kill
        _, err = proc.communicate(timeout=300)
        if proc.returncode:
            raise SystemExit(f"the run failed: {err.strip()[-500:]}")
    finally:
        proc.kill()
    recs = records(out)
    gaps = []
    for node in (0, 2):
        times = [r["wall_s"] for r in recs if r["node"] == node]
        gaps += [b - a for a, b in zip(times, times[1:])]
    with open(os.path.join(out, "summary.json")) as fh:
        summary = json.load(fh)
    return {"back_s": round(back, 3), "neighbour_gap_s": round(max(gaps), 3),
            "restarts": summary["restarts"], "accuracy_mean": summary["accuracy_mean"]}


def main() -> int:
    repeat_cases("restart_gap_", tree_args(__doc__), {"ring:3, node 1 killed": one_run}, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
