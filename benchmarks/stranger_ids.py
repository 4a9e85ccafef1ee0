"""A stranger that names a fresh node id for every message, against a running node.

Starts ``p2pfl cluster --topology line:2 --dataset digits --local-steps 0 --link
latency_ms=300`` (long, slow rounds: the node mostly waits), then opens a new
connection to node 0's data port for each of ``--ids`` ids, sends one ``hello``
(its sender is its routing id, so it passes the spoof check and is dropped as an
unknown sender), and closes it.  Measures node 0's resident memory (VmRSS) before
and after, and the drops its summary counts.  ``--tree`` runs another checkout.

    python benchmarks/stranger_ids.py [--tree DIR] [--ids 40000]

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
        before = rss_mib(node["pid"])
        seconds = flood(node["address"], ids)
        time.sleep(3)
        after = rss_mib(node["pid"])
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(60)
        with open(os.path.join(out, "summary.json")) as fh:
            s = json.load(fh)
        return {"rss_before_mib": before, "rss_after_mib": after,
                "flood_seconds": round(seconds, 1),
                "unknown_sender": s["dropped"].get("unknown_sender", 0)}
    finally:
        end_all([launcher])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=ROOT, help="the checkout whose CLI runs")
    ap.add_argument("--ids", type=int, default=40000)
    args = ap.parse_args()
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
