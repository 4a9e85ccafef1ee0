"""A remote node that dies during start-up, before the launcher has it ready.

Starts ``p2pfl cluster --topology ring:4 --listen``.  ``--case join``: a
process joins as node 1, naming a control port where nothing listens, and
exits (what the launcher sees of a ``p2pfl node`` killed right after it sent
its join); then the four real ``p2pfl node`` processes start, node 1's among
them.  ``--case config``: a process joins as node 1 with live sockets, the
other three real nodes start, and it exits once its config came (before it
says ready).  Measures the wall time from the real nodes' start until the
launcher exits, the launcher's exit status and last line, and node 1's exit
status (``join``).  ``--tree`` runs another checkout (an older commit, to
compare); the launcher's ``--start-timeout`` bounds the wait.

    python benchmarks/dead_before_reached.py [--tree DIR] [--case join|config]
        [--repeats 3] [--start-timeout 30]

Writes ``benchmarks/results/dead_before_reached.json`` (one entry per tree,
commit and case; an entry of the same three is replaced).
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
OUT = os.path.join(HERE, "results", "dead_before_reached.json")
sys.path.insert(0, ROOT)

from p2pfl.addresses import free_port  # noqa: E402

#: Run in the tree under test: join as node 1, then exit; with a dead control port
#: (``join``), or with live ones once the config came (``config``).
DEAD_JOIN = """
import sys, time, zmq, p2pfl
from p2pfl.transport import Endpoint
from p2pfl.transport.sockets import process_identity
addr, dead, case = sys.argv[1:4]
ctx = zmq.Context()
ep = Endpoint(ctx, 1, "tcp://127.0.0.1:*", control="tcp://127.0.0.1:*")
ep.connect("launcher", addr, emulated=False, routing_id=process_identity(1))
where = [dead, dead] if case == "join" else [ep.address, ep.control_address]
ep.send("launcher", "join", meta={"address": where[0], "control": where[1],
                                  "version": p2pfl.__version__})
sys.stdout.write("joined\\n")
sys.stdout.flush()
if case == "join":
    time.sleep(0.5)
else:
    deadline, msg = time.monotonic() + 120, None
    while time.monotonic() < deadline and not (msg and msg.kind == "config"):
        msg = ep.recv(0.5)
ep.close()
ctx.term()
"""


def one_run(tree: str, start_timeout: float, case: str) -> dict:
    cli = [sys.executable, "-m", "p2pfl.cli"]
    addr = f"tcp://127.0.0.1:{free_port()}"
    out = f"/tmp/dead_before_reached_{os.getpid()}"
    launcher = subprocess.Popen([*cli, "cluster", "--topology", "ring:4", "--listen", addr,
                                 "--start-timeout", f"{start_timeout:g}", "--out", out],
                                cwd=tree, text=True, stderr=subprocess.PIPE)
    procs = []
    try:
        for line in launcher.stderr:
            if line.startswith("waiting for 4 node(s) to join at"):
                break
        dead = subprocess.Popen([sys.executable, "-c", DEAD_JOIN, addr,
                                 f"tcp://127.0.0.1:{free_port()}", case], cwd=tree,
                                stdout=subprocess.PIPE, text=True)
        procs.append(dead)
        assert dead.stdout.readline() == "joined\n"
        if case == "join":
            dead.wait(timeout=30)
        t0 = time.monotonic()
        ids = "1023" if case == "join" else "023"
        procs += [subprocess.Popen([*cli, "node", "--connect", addr, "--host", "127.0.0.1",
                                    "--id", k, "--start-timeout", f"{start_timeout:g}"],
                                   cwd=tree, stderr=subprocess.DEVNULL) for k in ids]
        _, err = launcher.communicate(timeout=start_timeout + 120)
        wall = time.monotonic() - t0
        lines = err.strip().splitlines()
        return {"seconds": round(wall, 3), "launcher_status": launcher.returncode,
                "node1_status": procs[1].wait(timeout=60) if case == "join" else None,
                "launcher_said": lines[-1] if lines else ""}
    finally:
        end_all([launcher, *procs])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--start-timeout", type=float, default=30.0)
    ap.add_argument("--case", choices=("join", "config"), default="join",
                    help="node 1 dies right after its join, or once its config came")
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    runs = [one_run(tree, args.start_timeout, args.case) for _ in range(args.repeats)]
    for r in runs:
        print(f"{r['seconds']:7.2f} s  launcher exit {r['launcher_status']}  node 1 exit "
              f"{r['node1_status']}  {r['launcher_said'][:100]}")
    summarize(OUT, tree, runs, "the launcher ended, after the nodes started,",
              {"case": args.case}, {"start_timeout": args.start_timeout})
    return 0


if __name__ == "__main__":
    sys.exit(main())
