"""How long remote nodes go on after their launcher died (SIGKILL: no stop reaches them)
or was stopped for good (``--signal STOP``: its kernel keeps the connections up).

Starts ``p2pfl cluster --topology ring:4 --dataset digits --listen ADDR --rounds
100000 --local-steps 20`` and four ``p2pfl node --id N`` processes, signals the
launcher 2 s after the nodes joined, and measures for each node the seconds from the
signal to its exit, its exit status and last line, and the CPU seconds it spent after
the kill (training among its peers, its records going to no one): its CPU clock from
``/proc`` at the kill, and the whole-life figure of ``wait4`` at its exit.  ``--tree``
runs another checkout's CLI (an older commit, to compare).

    python benchmarks/dead_launcher.py [--tree DIR] [--signal KILL|STOP] [--repeats 3]

Writes ``benchmarks/results/dead_launcher.json`` (an entry per tree, commit and signal,
none meaning KILL; the ``seconds`` of a run are its last node's).
"""

from __future__ import annotations

import argparse
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
OUT = os.path.join(HERE, "results", "dead_launcher.json")
sys.path.insert(0, ROOT)

from p2pfl.addresses import free_port  # noqa: E402

NODES = 4


def _cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reap(proc: subprocess.Popen, into: dict) -> None:
    """Wait for ``proc`` with ``wait4``: when it ended, its status, its CPU seconds."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    into.update(ended=time.monotonic(), status=proc.returncode,
                cpu_s=usage.ru_utime + usage.ru_stime)


def one_run(tree: str, out: str, sig: str) -> dict:
    cli = [sys.executable, "-m", "p2pfl.cli"]
    addr = f"tcp://127.0.0.1:{free_port()}"
    launcher = subprocess.Popen([*cli, "cluster", "--topology", f"ring:{NODES}", "--dataset",
                                 "digits", "--listen", addr, "--rounds", "100000",
                                 "--local-steps", "20", "--out", out],
                                cwd=tree, text=True, stderr=subprocess.PIPE)
    said: list = []
    threading.Thread(target=lambda: said.extend(launcher.stderr), daemon=True).start()
    errs = [os.path.join(out + "-logs", f"node{i}.err") for i in range(NODES)]
    os.makedirs(out + "-logs")
    nodes = []
    try:
        while not any(x.startswith(f"waiting for {NODES} node(s)") for x in list(said)):
            time.sleep(0.05)
        nodes = [subprocess.Popen([*cli, "node", "--connect", addr, "--host", "127.0.0.1",
                                   "--id", str(i)], cwd=tree, stderr=open(errs[i], "w"))
                 for i in range(NODES)]
        while not any(" nodes joined in " in x for x in list(said)):
            time.sleep(0.05)
        time.sleep(2.0)
        at_kill = [_cpu_s(p.pid) for p in nodes]
        launcher.send_signal(getattr(signal, "SIG" + sig))
        killed = time.monotonic()
        ends = [{} for _ in nodes]
        reapers = [threading.Thread(target=_reap, args=(p, e)) for p, e in zip(nodes, ends)]
        for t in reapers:
            t.start()
        for t in reapers:
            t.join(timeout=600)
        last = []
        for path in errs:
            with open(path) as fh:
                last.append((fh.read().strip().splitlines() or [""])[-1][:200])
        return {"seconds": round(max(e["ended"] for e in ends) - killed, 3),
                "node_s": [round(e["ended"] - killed, 3) for e in ends],
                "node_status": [e["status"] for e in ends],
                "cpu_after_kill_s": [round(e["cpu_s"] - c, 2) for e, c in zip(ends, at_kill)],
                "node0_said": last[0]}
    finally:
        end_all([launcher, *(p for p in nodes if p.returncode is None)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--signal", default="KILL", choices=("KILL", "STOP"),
                    help="what the launcher gets (default KILL)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    runs = []
    with tempfile.TemporaryDirectory(prefix="p2pfl-dead-launcher-") as tmp:
        for k in range(args.repeats):
            r = one_run(tree, os.path.join(tmp, str(k)), args.signal)
            runs.append(r)
            print(f"  run {k}: nodes ended {r['node_s']} s after SIG{args.signal}, exit "
                  f"{r['node_status']}, CPU after it {r['cpu_after_kill_s']} s; node 0: "
                  f"{r['node0_said'][:110]}", flush=True)
    summarize(OUT, tree, runs, f"the last node ended, after the launcher's SIG{args.signal},",
              {"signal": args.signal})
    return 0


if __name__ == "__main__":
    sys.exit(main())
