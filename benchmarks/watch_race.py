"""Live peers a connection watch never sees up: monitor attached after the connect or before.

N ROUTER sockets bound on loopback stand for live nodes' control sockets.  The
launcher's endpoint connects to each as it does to a remote node (heartbeats
on), and a :class:`~p2pfl.transport.liveness.ConnectionWatch` follows each
connection: ``after``, attached once the socket connected (the launcher's order
until 6ab1ed4), or ``before``, through ``connect(watch=...)`` (its order since).
Counts the peers still never seen up after ``--wait`` seconds of polling: each
would count as down, and be unjoined or failed, though it is alive.  Each burst
runs in a fresh process, as a launcher's joins do (a process's first burst
misses the most), the two orders alternated.

    python benchmarks/watch_race.py [--peers 60] [--bursts 10] [--wait 3]

Writes ``benchmarks/results/watch_race.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import zmq  # noqa: E402

from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.transport import Endpoint  # noqa: E402
from p2pfl.transport.liveness import ConnectionWatch  # noqa: E402

from _results import commit_of  # noqa: E402


def burst(ctx: zmq.Context, peers: int, order: str, wait: float) -> int:
    """Peers never seen up after ``wait`` s, of ``peers`` connected in a burst."""
    routers = [ctx.socket(zmq.ROUTER) for _ in range(peers)]
    ports = [r.bind_to_random_port("tcp://127.0.0.1") for r in routers]
    ep = Endpoint(ctx, "launcher", "tcp://127.0.0.1:*")
    watch = ConnectionWatch()
    for i, port in enumerate(ports):
        address = f"tcp://127.0.0.1:{port}"
        if order == "before":
            ep.connect(i, address, control=True, heartbeat_s=2.0,
                       watch=lambda sock, i=i: watch.watch(i, sock))
        else:
            ep.connect(i, address, control=True, heartbeat_s=2.0)
            watch.watch(i, ep.command_socket(i))
    end = time.monotonic() + wait
    while time.monotonic() < end:
        watch.poll(time.monotonic())
        time.sleep(0.05)
    missed = sum(watch.never_up(i) for i in range(peers))
    watch.close()
    ep.close()
    for r in routers:
        r.close(linger=0)
    return missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=60)
    ap.add_argument("--bursts", type=int, default=10)
    ap.add_argument("--wait", type=float, default=3.0)
    ap.add_argument("--one", choices=("after", "before"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # one burst, in this process
        ctx = zmq.Context()
        print(burst(ctx, args.peers, args.one, args.wait))
        ctx.term()
        return 0
    result = {"commit": commit_of(ROOT), "peers": args.peers, "wait_s": args.wait,
              "after": [], "before": []}
    for _ in range(args.bursts):
        for order in ("after", "before"):
            res = subprocess.run([sys.executable, __file__, "--one", order, "--peers",
                                  str(args.peers), "--wait", str(args.wait)],
                                 capture_output=True, text=True, check=True)
            result[order].append(int(res.stdout))
    for order in ("after", "before"):
        print(f"monitor {order} the connect: never seen up, of {args.peers} live peers, "
              f"in {args.bursts} bursts: {result[order]}")
    write_json_atomic(os.path.join(HERE, "results", "watch_race.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
