"""CurveZMQ, measured on real sockets and processes (issue 9).

    python benchmarks/secure.py [same refusals pcap cost]

* ``same``: ``ring:8 --dataset digits --rounds 30 --seed 1`` with and without
  ``--secure``: final accuracies (they must be equal) and bytes.
* ``refusals``: the same secure cluster, run for 200 rounds so that the attack
  fits in it; while it runs, a client whose key is on no allow-list and a
  plaintext client each send 1,000 messages (one connection each) to node 0,
  claiming to be its neighbour 1.  Reports what the clients saw (handshakes
  accepted / refused), what node 0 counted, and the accuracy against a clean
  secure run.
* ``pcap``: a packet capture on loopback of a run whose every socket is TCP
  (``--listen`` and ``p2pfl node --key``, ring:4, 10 rounds), secure and
  plain: how often the plaintext header fields (``k`` = every message kind,
  ``v`` = 1 followed by ``k``) and record keys occur in the TCP payloads.  Every
  pattern is at least 5 bytes, so that ciphertext matches one by chance about
  once in 10¹² bytes (3 bytes would: once in 16 MB).  Needs root.
* ``cost``: rounds per second with 8 MB models (``mlp:27000``, 2.03 M
  parameters) on ``ring:4``, secure against plain, alternating A/B/A/B runs;
  the ratio of the medians.

Every figure is read from the runs and printed; each part writes OUT/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl.addresses import free_port  # noqa: E402
from p2pfl.metrics import read_metrics, write_json_atomic  # noqa: E402
from p2pfl.transport.probe import LoopbackCapture, can_capture, hostile_clients  # noqa: E402
from p2pfl.transport.wire import KINDS  # noqa: E402

RING8 = ("--topology", "ring:8", "--dataset", "digits", "--seed", "1")


def cli(*args: str, wait: bool = True, quiet: bool = False):
    cmd = [sys.executable, "-m", "p2pfl.cli", *args]
    if not quiet:
        print("  $ p2pfl " + " ".join(args), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    if wait and proc.wait() != 0:
        raise RuntimeError(f"p2pfl {' '.join(args)} exited with {proc.returncode}")
    return proc


def summary(out: str) -> dict:
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)


def same(tmp: str) -> dict:
    rows = {}
    for name, extra in (("plain", ()), ("secure", ("--secure",))):
        out = os.path.join(tmp, name)
        cli("cluster", *RING8, "--rounds", "30", "-q", "--out", out, *extra)
        s = summary(out)
        rows[name] = {k: s[k] for k in ("accuracy_mean", "accuracy_min", "accuracy_max",
                                         "bytes_sent_total", "messages_sent_total", "dropped")}
        print(f"  {name:6s} accuracy mean {s['accuracy_mean']:.6f} min {s['accuracy_min']:.6f}"
              f" | {s['bytes_sent_total']:,} B in {s['messages_sent_total']} messages")
    rows["identical_accuracy"] = all(rows["plain"][k] == rows["secure"][k]
                                     for k in ("accuracy_mean", "accuracy_min", "accuracy_max"))
    print(f"  identical accuracy: {rows['identical_accuracy']}; secure headers add "
          f"{rows['secure']['bytes_sent_total'] - rows['plain']['bytes_sent_total']:,} B")
    return rows


def _nodes_json(out: str, proc) -> list:
    path = os.path.join(out, "nodes.json")
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError("the run ended before it wrote nodes.json")
        time.sleep(0.02)
    with open(path) as fh:
        return json.load(fh)


def refusals(tmp: str, count: int = 1000, rounds: int = 200) -> dict:
    clean = os.path.join(tmp, "clean")
    cli("cluster", *RING8, "--rounds", str(rounds), "--secure", "-q", "--out", clean)
    out = os.path.join(tmp, "attacked")
    proc = cli("cluster", *RING8, "--rounds", str(rounds), "--secure", "-q", "--out", out,
               wait=False)
    target = _nodes_json(out, proc)[0]
    tallies: dict = {}

    def attack(name, **kw):
        tallies[name] = hostile_clients(target["address"], count, claim=1, **kw)

    threads = [threading.Thread(target=attack, args=("unknown_key",),
                                kwargs={"server_key": target["public_key"].encode()}),
               threading.Thread(target=attack, args=("plaintext",))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    attack_s = time.monotonic() - t0
    if proc.wait() != 0:
        raise RuntimeError("the attacked run failed")
    s, c = summary(out), summary(clean)
    recs = read_metrics(os.path.join(out, "metrics.jsonl"))
    node0 = [r for r in recs if r["node"] == 0]
    row = {"messages_per_client": count, "rounds": rounds, "attack_s": round(attack_s, 2),
           "clients": tallies, "node_dropped": s["dropped"],
           "attack_ended_before_run": attack_s < max(r["wall_s"] for r in node0),
           "accuracy_mean": s["accuracy_mean"], "accuracy_mean_clean": c["accuracy_mean"],
           "accuracy_identical": s["accuracy_mean"] == c["accuracy_mean"]}
    for name, t in tallies.items():
        print(f"  {name:11s}: {t['sent']} sent, {t['accepted']} handshakes accepted, "
              f"{t['refused']} refused, {t['undecided']} undecided")
    print(f"  node drops {s['dropped']}; attack took {attack_s:.1f} s of a "
          f"{max(r['wall_s'] for r in node0):.1f} s run")
    print(f"  accuracy attacked {s['accuracy_mean']:.6f} vs clean {c['accuracy_mean']:.6f}")
    return row



NEEDLES = {**{f"k={k}": b"\xa1k" + msgpack.packb(k) for k in sorted(KINDS)},
           "v=1,k=": b"\xa1v\x01\xa1k", "accuracy": msgpack.packb("accuracy"),
           "bytes_sent": msgpack.packb("bytes_sent")}


def tcp_run(tmp: str, name: str, secure: bool, rounds: int = 10) -> tuple:
    """A ring:4 run whose every socket is TCP: launcher --listen, nodes by hand."""
    out, port = os.path.join(tmp, name), free_port()
    addr = f"tcp://127.0.0.1:{port}"
    flags = ["--topology", "ring:4", "--dataset", "digits", "--rounds", str(rounds),
             "--listen", addr, "-q", "--out", out]
    keys = os.path.join(tmp, name + "-keys")
    if secure:
        cli("keys", "generate", keys, "--nodes", "4", quiet=True)
        flags += ["--keys", keys]
    launcher = cli("cluster", *flags, wait=False)
    nodes = [cli("node", "--connect", addr, "--host", "127.0.0.1",
                 *(["--key", os.path.join(keys, f"{i}.key_secret")] if secure
                   else ["--id", str(i)]), wait=False, quiet=True) for i in range(4)]
    if launcher.wait() != 0 or any(n.wait() != 0 for n in nodes):
        raise RuntimeError(f"the {name} tcp run failed")
    with open(os.path.join(out, "nodes.json")) as fh:
        rows = json.load(fh)
    ports = {port} | {int(n[k].rsplit(":", 1)[1]) for n in rows for k in ("address", "control")}
    return summary(out), ports


def pcap(tmp: str) -> dict:
    why = can_capture()
    if why:
        print(f"  skipped: {why}")
        return {"skipped": why}
    rows = {}
    for name, secure in (("plain", False), ("secure", True)):
        with LoopbackCapture() as cap:
            s, ports = tcp_run(tmp, "tcp-" + name, secure)
        payloads = cap.tcp_payloads(ports)
        blob = b"\n".join(payloads)
        hits = {k: blob.count(v) for k, v in NEEDLES.items() if blob.count(v)}
        rows[name] = {"packets": len(payloads), "payload_bytes": sum(map(len, payloads)),
                      "header_field_hits": hits, "accuracy_mean": s["accuracy_mean"]}
        print(f"  {name:6s}: {len(payloads)} TCP packets, {sum(map(len, payloads)):,} payload "
              f"bytes; plaintext header fields found: {sum(hits.values())} {hits}")
    return rows


def raw_link_mb_s(secure: bool, count: int = 40, size: int = 8_100_040) -> float:
    """MB/s of one PUSH/PULL link on loopback TCP, 8 MB messages: the transport's floor."""
    import zmq

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    if secure:
        (spub, ssec), (cpub, csec) = zmq.curve_keypair(), zmq.curve_keypair()
        pull.curve_server, pull.curve_secretkey, pull.curve_publickey = True, ssec, spub
        push.curve_secretkey, push.curve_publickey, push.curve_serverkey = csec, cpub, spub
    pull.bind("tcp://127.0.0.1:*")
    push.connect(pull.LAST_ENDPOINT.decode())
    data = b"x" * size
    push.send(data)
    pull.recv()
    sender = threading.Thread(target=lambda: [push.send(data, copy=False) for _ in range(count)])
    t0 = time.perf_counter()
    sender.start()
    for _ in range(count):
        pull.recv(copy=False)
    elapsed = time.perf_counter() - t0
    sender.join()
    ctx.destroy(linger=0)
    return count * size / elapsed / 1e6


def cost(tmp: str, repeats: int = 3, rounds: int = 20) -> dict:
    flags = ("--topology", "ring:4", "--dataset", "digits", "--model", "mlp:27000",
             "--rounds", str(rounds), "--eval-every", str(rounds), "--no-consensus",
             "--round-timeout", "60", "-q")
    rates: dict = {"plain": [], "secure": []}
    for i in range(repeats):
        for name, extra in (("plain", ()), ("secure", ("--secure",))):
            out = os.path.join(tmp, f"cost-{name}-{i}")
            cli("cluster", *flags, "--out", out, *extra)
            recs = read_metrics(os.path.join(out, "metrics.jsonl"))
            by_round: dict = {}
            for r in recs:
                by_round[r["round"]] = max(by_round.get(r["round"], 0.0), r["wall_s"])
            first, last = min(by_round), max(by_round)
            rate = (last - first) / (by_round[last] - by_round[first])
            rates[name].append(rate)
            s = summary(out)
            print(f"  {name:6s} run {i}: {rate:.2f} rounds/s "
                  f"({s['num_params']:,} parameters, {s['bytes_sent_total'] / 1e6:.0f} MB sent)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["secure"] / med["plain"]
    print(f"  median rounds/s: plain {med['plain']:.2f}, secure {med['secure']:.2f}; "
          f"secure keeps {100 * ratio:.1f} %")
    link = {"plain": raw_link_mb_s(False), "secure": raw_link_mb_s(True)}
    print(f"  one raw pyzmq link, 8 MB messages: plain {link['plain']:.0f} MB/s, CURVE "
          f"{link['secure']:.0f} MB/s ({link['secure'] / link['plain']:.2f}x)")
    return {"rounds_per_s": rates, "median": med, "secure_over_plain": ratio,
            "model": "mlp:27000", "model_mb": 4 * 2_025_010 / 1e6, "raw_link_mb_s": link}


PARTS = {"same": same, "refusals": refusals, "pcap": pcap, "cost": cost}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", help=f"some of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "secure"))
    args = ap.parse_args()
    for part in args.parts:
        if part not in PARTS:
            ap.error(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="p2pfl-secure-")
    try:
        for part in args.parts or list(PARTS):
            print(f"[{part}]", flush=True)
            write_json_atomic(os.path.join(args.out, f"{part}.json"), PARTS[part](tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
