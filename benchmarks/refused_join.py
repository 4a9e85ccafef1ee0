"""How long a node whose join is refused takes to learn it, and what it says.

Starts ``p2pfl cluster --topology ring:4 --listen`` and ``p2pfl node --id 1``,
and 3 s later a second ``p2pfl node --id 1``: a process with a taken id.
Measures the wall time from the second's start until it exits, its exit status
and its last line.  ``--tree`` runs another checkout's CLI (an
older commit, to compare); the nodes' ``--start-timeout`` bounds the wait where
nothing answers.

    python benchmarks/refused_join.py [--tree DIR] [--repeats 5] [--start-timeout 20]

Writes ``benchmarks/results/refused_join.json`` (a list of runs, one entry per
tree and commit; an entry of the same tree and commit is replaced).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _results import end_all, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "refused_join.json")
sys.path.insert(0, ROOT)

from p2pfl.addresses import free_port  # noqa: E402


def one_run(tree: str, start_timeout: float) -> dict:
    """The first ``node --id 1`` gets 3 s to join; then a second one is timed."""
    cli = [sys.executable, "-m", "p2pfl.cli"]
    addr = f"tcp://127.0.0.1:{free_port()}"
    out = f"/tmp/refused_join_{os.getpid()}"
    launcher = subprocess.Popen([*cli, "cluster", "--topology", "ring:4", "--listen", addr,
                                 "--start-timeout", "300", "--out", out], cwd=tree,
                                text=True, stderr=subprocess.PIPE)
    procs = []
    try:
        for line in launcher.stderr:
            if line.startswith("waiting for 4 node(s) to join at"):
                break
        node = [*cli, "node", "--connect", addr, "--host", "127.0.0.1", "--id", "1",
                "--start-timeout"]
        procs.append(subprocess.Popen([*node, "300"], cwd=tree, stderr=subprocess.DEVNULL))
        time.sleep(3.0)
        t0 = time.monotonic()
        second = subprocess.Popen([*node, f"{start_timeout:g}"], cwd=tree, text=True,
                                  stderr=subprocess.PIPE)
        procs.append(second)
        _, err = second.communicate(timeout=start_timeout + 60)
        wall = time.monotonic() - t0
        lines = err.strip().splitlines()
        return {"seconds": round(wall, 3), "status": second.returncode,
                "said": lines[-1] if lines else "", "first_running": procs[0].poll() is None}
    finally:
        end_all([launcher, *procs])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--start-timeout", type=float, default=20.0)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    runs = [one_run(tree, args.start_timeout) for _ in range(args.repeats)]
    for r in runs:
        print(f"{r['seconds']:7.2f} s  exit {r['status']}  {r['said']}")
    summarize(OUT, tree, runs, "refused node out after", {},
              {"start_timeout": args.start_timeout})
    return 0


if __name__ == "__main__":
    sys.exit(main())
