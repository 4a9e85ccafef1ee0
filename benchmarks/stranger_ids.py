"""A stranger that names a fresh node id for every message, against a running node.

Starts ``p2pfl cluster --topology line:2 --dataset digits --local-steps 0 --link
latency_ms=300`` (long, slow rounds: the node mostly waits), then opens a new
connection to node 0's data port for each of ``--ids`` ids, sends one ``hello``
(its sender is its routing id, so it passes the spoof check and is dropped as an
unknown sender), and closes it.  Measures node 0's resident memory (VmRSS) before
and after, and the drops its summary counts.  ``--tree`` runs another checkout.

    python benchmarks/stranger_ids.py [--tree DIR] [--ids 40000] [--bare]

``--bare`` floods a bare pyzmq ROUTER instead (a child process that only receives,
no p2pfl node): what ZeroMQ and the C heap keep of the same connections, the baseline
for the node's growth.

Writes ``benchmarks/results/stranger_ids.json`` (one entry per tree, commit and id
count; an entry of the same three is replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

from _results import commit_of, end_all, save_entry

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "stranger_ids.json")
sys.path.insert(0, ROOT)

from p2pfl.transport import pack  # noqa: E402
from p2pfl.transport.sockets import identity  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
    return round(kib / 1024, 1)


def flood(address: str, ids: int) -> float:
    """Send one hello from each of ``ids`` fresh ids, a connection each; seconds taken."""
    import zmq

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 60000)
    t0 = time.monotonic()
    for i in range(ids):
        while i % 200 == 0 and len(os.listdir("/proc/self/fd")) > 4000:
            time.sleep(0.02)  # closed sockets linger until their message has left
        s = ctx.socket(zmq.DEALER)
        src = 10_000_000 + i
        s.setsockopt(zmq.ROUTING_ID, identity(src))
        s.setsockopt(zmq.LINGER, 500)
        s.connect(address)
        s.send_multipart(pack("hello", src, 0, 0))
        s.close()
    ctx.term()
    return time.monotonic() - t0


def measured_flood(pid: int, address: str, ids: int) -> dict:
    """:func:`flood` ``address``, with the VmRSS of process ``pid`` before and 3 s after."""
    before = rss_mib(pid)
    seconds = flood(address, ids)
    time.sleep(3)
    return {"rss_before_mib": before, "rss_after_mib": rss_mib(pid),
            "flood_seconds": round(seconds, 1)}


def one_run(tree: str, ids: int) -> dict:
    out = tempfile.mkdtemp(prefix="stranger_ids_")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "p2pfl.cli", "cluster", "--topology", "line:2", "--dataset",
         "digits", "--rounds", "100000", "--local-steps", "0", "--link", "latency_ms=300",
         "--round-timeout", "5", "-q", "--out", out], cwd=tree,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(out, "metrics.jsonl")):
            if time.monotonic() > deadline or launcher.poll() is not None:
                raise RuntimeError("the cluster did not start")
            time.sleep(0.2)
        time.sleep(3)
        with open(os.path.join(out, "nodes.json")) as fh:
            node = next(n for n in json.load(fh) if n["id"] == 0)
        measured = measured_flood(node["pid"], node["address"], ids)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(60)
        with open(os.path.join(out, "summary.json")) as fh:
            s = json.load(fh)
        return {**measured, "unknown_sender": s["dropped"].get("unknown_sender", 0)}
    finally:
        end_all([launcher])


def _bare_router(ports, stop) -> None:
    """A ROUTER on a loopback port that receives and drops until ``stop``; then it
    puts how many messages it took."""
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    ports.put(router.bind_to_random_port("tcp://127.0.0.1"))
    taken = 0
    while not stop.is_set():
        if router.poll(100):
            router.recv_multipart(copy=False)
            taken += 1
    ports.put(taken)
    ctx.destroy(linger=0)


def bare_run(ids: int) -> dict:
    """The same flood against a bare pyzmq ROUTER (``--bare``)."""
    import multiprocessing as mp

    ports, stop = mp.Queue(), mp.Event()
    child = mp.Process(target=_bare_router, args=(ports, stop))
    child.start()
    try:
        port = ports.get(timeout=30)
        time.sleep(0.5)
        measured = measured_flood(child.pid, f"tcp://127.0.0.1:{port}", ids)
        stop.set()
        taken = ports.get(timeout=30)
    finally:
        stop.set()
        child.join(10)
    return {**measured, "received": taken}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--ids", type=int, default=40000)
    ap.add_argument("--bare", action="store_true",
                    help="flood a bare pyzmq ROUTER (the baseline), not a node")
    args = ap.parse_args()
    if args.bare:
        r = bare_run(args.ids)
        print(f"bare pyzmq ROUTER: {args.ids} stranger ids in {r['flood_seconds']} s; "
              f"VmRSS {r['rss_before_mib']} -> {r['rss_after_mib']} MiB; "
              f"{r['received']} received")
        save_entry(OUT, {"tree": "bare pyzmq ROUTER", "commit": "-", "ids": args.ids, **r},
                   ("tree", "commit", "ids"))
        return 0
    tree = os.path.abspath(args.tree)
    r = one_run(tree, args.ids)
    commit = commit_of(tree)
    print(f"{commit}: {args.ids} stranger ids in {r['flood_seconds']} s; node 0 VmRSS "
          f"{r['rss_before_mib']} -> {r['rss_after_mib']} MiB; "
          f"{r['unknown_sender']} dropped as unknown_sender")
    save_entry(OUT, {"tree": tree, "commit": commit, "ids": args.ids, **r},
               ("tree", "commit", "ids"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
