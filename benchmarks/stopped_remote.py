"""A remote node whose process is stopped (SIGSTOP) mid-run, for a while or for good,
or interrupted (SIGINT, SIGTERM).

Starts ``p2pfl cluster --topology ring:4 --dataset digits --listen ADDR --rounds
R --local-steps 20`` and four ``p2pfl node --id N`` processes.  Two seconds after
the nodes joined, node 2's process gets ``--signal`` (STOP by default).  A stopped
one is resumed ``--stop S`` seconds later, with ``--stop 0`` never (it is killed
once the launcher exits).  Measures the seconds from the signal until the launcher
exits and until it logs that node 2 failed (``failed_s``; None if it did not), the
launcher's exit status, ``failed_nodes``, and node 2's exit status and last line.
With ``--with-launcher`` the launcher gets the signal as well, right after node 2 (a
whole process group's Ctrl-C); the byte totals tell whether node 2's counters came.
``--tree`` runs another checkout (an older commit, to compare).

    python benchmarks/stopped_remote.py [--tree DIR] [--signal STOP|INT|TERM]
        [--with-launcher] [--stop 0] [--rounds 1500] [--repeats 3]

Writes ``benchmarks/results/stopped_remote.json`` (one entry per tree, commit and case:
signal, stop, with the launcher or not; a re-run of an entry's case replaces it; an
entry without ``signal`` is STOP).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from _results import end_all, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "stopped_remote.json")
sys.path.insert(0, ROOT)

from p2pfl.addresses import free_port  # noqa: E402


def one_run(tree: str, sig: str, stop: float, rounds: int, with_launcher: bool) -> dict:
    cli = [sys.executable, "-m", "p2pfl.cli"]
    addr = f"tcp://127.0.0.1:{free_port()}"
    out = tempfile.mkdtemp(prefix="stopped_remote_")
    launcher = subprocess.Popen([*cli, "cluster", "--topology", "ring:4", "--dataset",
                                 "digits", "--listen", addr, "--rounds", str(rounds),
                                 "--local-steps", "20", "--start-timeout", "60", "--out", out],
                                cwd=tree, text=True, stderr=subprocess.PIPE)
    heard: list = []  # (when, line) of what the launcher said
    reader = threading.Thread(target=lambda: heard.extend((time.monotonic(), x) for x in
                                                          launcher.stderr), daemon=True)
    node2 = os.path.join(out, "node2.err")
    nodes = []

    def said(text: str) -> float | None:  # when the launcher first said it
        return next((t for t, line in list(heard) if text in line), None)

    try:
        reader.start()
        while said("waiting for 4 node(s)") is None:
            time.sleep(0.05)
        nodes = [subprocess.Popen([*cli, "node", "--connect", addr, "--host", "127.0.0.1",
                                   "--id", str(i), "--start-timeout", "60"], cwd=tree,
                                  stderr=open(node2 if i == 2 else os.devnull, "w"))
                 for i in range(4)]
        while said(" nodes joined in ") is None:
            time.sleep(0.05)
        time.sleep(2.0)
        nodes[2].send_signal(getattr(signal, "SIG" + sig))
        t0 = time.monotonic()
        if with_launcher:  # as a whole process group's Ctrl-C, a batch system's cancel
            launcher.send_signal(getattr(signal, "SIG" + sig))
        if sig == "STOP" and stop > 0:
            time.sleep(stop)
            nodes[2].send_signal(signal.SIGCONT)
        launcher.wait(timeout=600)
        wall = time.monotonic() - t0
        nodes[2].send_signal(signal.SIGCONT)
        if sig == "STOP" and stop <= 0:
            nodes[2].kill()
        status2 = nodes[2].wait(timeout=180)
        reader.join(5)
        failed_at = said("node 2 failed")
        with open(os.path.join(out, "summary.json")) as fh:
            summary = json.load(fh)
        with open(node2) as fh:
            last2 = (fh.read().strip().splitlines() or [""])[-1]
        return {"seconds": round(wall, 3),
                "failed_s": None if failed_at is None else round(failed_at - t0, 3),
                "launcher_status": launcher.returncode,
                "failed_nodes": summary.get("failed_nodes"), "node2_status": status2,
                "bytes_sent_total": summary.get("bytes_sent_total"),
                "bytes_sent_counted_by_nodes": summary.get("bytes_sent_counted_by_nodes"),
                "node2_said": last2[:200],
                "launcher_said": [x.strip() for _, x in heard if "failed" in x][:3]}
    finally:
        end_all([launcher, *nodes])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--signal", default="STOP", choices=("STOP", "INT", "TERM"),
                    help="what node 2's process gets (default STOP)")
    ap.add_argument("--with-launcher", action="store_true",
                    help="signal the launcher too, at once (INT or TERM)")
    ap.add_argument("--stop", type=float, default=0.0,
                    help="seconds node 2 stays stopped (0: for good)")
    ap.add_argument("--rounds", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    stop = args.stop if args.signal == "STOP" else None
    if args.with_launcher and args.signal == "STOP":
        ap.error("--with-launcher is for INT or TERM")
    runs = [one_run(tree, args.signal, args.stop, args.rounds, args.with_launcher)
            for _ in range(args.repeats)]
    for r in runs:
        print(f"{r['seconds']:7.2f} s  node 2 failed after {r['failed_s']} s  launcher exit "
              f"{r['launcher_status']}  failed {r['failed_nodes']}  node 2 exit "
              f"{r['node2_status']}  {r['node2_said'][:90]}  bytes sent: "
              f"{r['bytes_sent_total']} in all, {r['bytes_sent_counted_by_nodes']} by byes")
    case = {"signal": args.signal, "stop": stop}
    if args.with_launcher:
        case["with_launcher"] = True
    summarize(OUT, tree, runs, f"the launcher ended, after SIG{args.signal},", case,
              {"rounds": args.rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
