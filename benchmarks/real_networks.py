"""Real network conditions, measured on real sockets and processes (issue 8).

    python benchmarks/real_networks.py [links stragglers churn crash coordinator]

* ``emulator``: the emulator honours its settings on a 2-node ``line:2``: the
  time a round gains with ``up_mbps=16`` for a ~2 MB model (``mlp:6700``: each
  node sends one model a round), against the nominal 8·B/16e6 s; the time a
  round gains with ``latency_ms=200``; the share of 1,000 messages lost with
  ``loss=0.1`` (asynchronous, so that a loss costs no time-out).
* ``links``: bytes are time.  torus:4x4, mnist1d, CNN, every uplink
  ``up_mbps=B,latency_ms=20``: wall time to 0.85 mean accuracy, dense
  against ``stc:0.05+golomb``, at 1 Mbit/s and at 0.25 Mbit/s.
* ``stragglers``: torus:4x4 digits with ``nodes/stragglers.toml`` (4 nodes 5x
  slower, 200 ms links): wall time to 0.9, ``--schedule sync`` against ``async``.
* ``churn``: torus:4x4 digits, 200 rounds, ``--churn 2:0.667`` (a quarter of
  the nodes offline at any time) against no churn: final mean accuracy.
* ``crash``: torus:4x4 digits, 300 rounds, ``--restart on-failure``; 2 of the
  16 node processes get SIGKILL at round 60: final accuracy of the restarted
  nodes and of all, against a clean run.
* ``coordinator``: ``--mode fedavg --nodes 10``, 60 rounds; the coordinator
  gets SIGKILL at round 20: rounds recorded, final accuracy against a clean run.

Every figure is read from the runs' metrics and printed; each part writes OUT/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl.metrics import read_metrics, write_json_atomic  # noqa: E402


def cluster(out: str, *flags: str, kill=None) -> tuple:
    """Run ``p2pfl cluster`` in its own process; ``kill=(labels, ready)`` sends SIGKILL
    to those nodes once ``ready(records)`` holds.  Returns (summary, records)."""
    cmd = [sys.executable, "-m", "p2pfl.cli", "cluster", "-q", "--out", out, *flags]
    print("  $ p2pfl cluster " + " ".join(flags), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    if kill is not None:
        labels, ready = kill
        path = os.path.join(out, "metrics.jsonl")
        while not (os.path.exists(path) and ready(_partial(path))):
            if proc.poll() is not None:
                raise RuntimeError("the run ended before the kill")
            time.sleep(0.02)
        with open(os.path.join(out, "nodes.json")) as fh:
            pids = [n["pid"] for n in json.load(fh) if str(n["label"]) in labels]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    if proc.wait() != 0:
        raise RuntimeError(f"run failed: {out}")
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh), read_metrics(os.path.join(out, "metrics.jsonl"))


def _partial(path: str) -> list:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.endswith("\n")]


def time_to(records: list, target: float):
    """Wall time when the mean of every node's latest accuracy first reaches ``target``."""
    latest, n = {}, len({r["node"] for r in records})
    for r in sorted(records, key=lambda r: r["wall_s"]):
        if r.get("accuracy") is not None:
            latest[r["node"]] = r["accuracy"]
            if len(latest) == n and np.mean(list(latest.values())) >= target:
                return r["wall_s"]
    return None


def final_by_node(records: list) -> dict:
    last = {}
    for r in sorted(records, key=lambda r: r["round"]):
        if r.get("accuracy") is not None and r.get("role") in ("gossip", "worker"):
            last[r["node"]] = r["accuracy"]
    return last


def _per_round(records: list, node: int = 0) -> float:
    wall = {r["round"]: r["wall_s"] for r in records if r["node"] == node}
    last = max(wall)
    return (wall[last] - wall[2]) / (last - 2)


def emulator(out: str) -> dict:
    base = ["--topology", "line:2", "--dataset", "digits", "--eval-every", "1000",
            "--no-consensus"]
    got = {}
    big = [*base, "--model", "mlp:6700", "--rounds", "8"]
    s0, r0 = cluster(os.path.join(out, "runs", "emu_big_plain"), *big)
    s1, r1 = cluster(os.path.join(out, "runs", "emu_big_16mbps"), *big, "--link", "up_mbps=16")
    nbytes = s1["bytes_sent_total"] / s1["messages_sent_total"]
    got["bandwidth"] = {"message_bytes": nbytes, "nominal_s": 8 * nbytes / 16e6,
                        "added_s_per_round": _per_round(r1) - _per_round(r0)}
    small = [*base, "--rounds", "12"]
    s0, r0 = cluster(os.path.join(out, "runs", "emu_plain"), *small)
    s1, r1 = cluster(os.path.join(out, "runs", "emu_200ms"), *small, "--link", "latency_ms=200")
    got["latency"] = {"added_s_per_round": _per_round(r1) - _per_round(r0)}
    s2, _ = cluster(os.path.join(out, "runs", "emu_loss"), *base, "--rounds", "500",
                    "--schedule", "async", "--link", "loss=0.1")
    got["loss"] = {"messages": s2["messages_sent_total"], "lost": s2["emulated_lost_total"],
                   "share": s2["emulated_lost_total"] / s2["messages_sent_total"]}
    print(f"  {got}", flush=True)
    return got


def links(out: str, extra: tuple = (), speeds: tuple = ("1", "0.25")) -> dict:
    base = ["--topology", "torus:4x4", "--dataset", "mnist1d", "--model", "cnn",
            "--rounds", "300", "--target-accuracy", "0.85", *extra]
    rows = []
    for mbps in speeds:
        times = {}
        for codec in ("none", "stc:0.05+golomb"):
            name = f"{'dense' if codec == 'none' else 'stc'}_{mbps}mbps{'_'.join(('',) + extra)}"
            s, recs = cluster(os.path.join(out, "runs", name), *base, "--compression", codec,
                              "--link", f"up_mbps={mbps},latency_ms=20")
            times[codec] = time_to(recs, 0.85)
            rows.append({"up_mbps": float(mbps), "compression": codec,
                         "seconds_to_0.85": times[codec], "mb": s["bytes_sent_total"] / 1e6,
                         "rounds": s["target_reached_at_round"]})
            print(f"  {name}: {times[codec]} s to 0.85, {rows[-1]['mb']:.2f} MB", flush=True)
        rows[-1]["ratio_to_dense"] = (times["stc:0.05+golomb"] / times["none"]
                                      if times["none"] and times["stc:0.05+golomb"] else None)
    return {"rows": rows}


def links_eval5(out: str) -> dict:
    """``links`` at 1 Mbit/s with evaluation every 5 rounds: on 2 cores the 16 nodes'
    per-round test-set evaluation is CPU time that compressed gossip waits for."""
    return links(out, ("--eval-every", "5"), ("1",))


def stragglers(out: str) -> dict:
    base = ["--topology", "torus:4x4", "--dataset", "digits", "--rounds", "100",
            "--profiles", os.path.join(ROOT, "nodes", "stragglers.toml")]
    got = {}
    for schedule in ("sync", "async"):
        s, recs = cluster(os.path.join(out, "runs", f"stragglers_{schedule}"), *base,
                          "--schedule", schedule)
        got[schedule] = {"seconds_to_0.9": time_to(recs, 0.9), "final": s["accuracy_mean"],
                         "run_s": max(r["wall_s"] for r in recs)}
        print(f"  {schedule}: {got[schedule]}", flush=True)
    a, b = got["async"]["seconds_to_0.9"], got["sync"]["seconds_to_0.9"]
    return dict(got, ratio=(a / b) if a and b else None)


def churn(out: str) -> dict:
    base = ["--topology", "torus:4x4", "--dataset", "digits", "--rounds", "200"]
    got = {}
    for name, extra in (("clean", []), ("churn", ["--churn", "2:0.667:1"])):
        s, recs = cluster(os.path.join(out, "runs", f"churn_{name}"), *base, *extra)
        offline = [r for r in recs if r.get("offline")]
        got[name] = {"final": s["accuracy_mean"], "min": s["accuracy_min"],
                     "offline_periods": len(offline), "run_s": max(r["wall_s"] for r in recs),
                     "failed": len(s["failed_nodes"])}
        print(f"  {name}: {got[name]}", flush=True)
    got["gap_points"] = 100 * (got["clean"]["final"] - got["churn"]["final"])
    return got


def crash(out: str) -> dict:
    base = ["--topology", "torus:4x4", "--dataset", "digits", "--rounds", "300",
            "--restart", "on-failure"]
    s0, r0 = cluster(os.path.join(out, "runs", "crash_clean"), *base)
    killed = {"5", "10"}
    s1, r1 = cluster(os.path.join(out, "runs", "crash_killed"), *base,
                     kill=(killed, lambda recs: len(recs) >= 16 * 60))
    final = final_by_node(r1)
    rest = [a for n, a in final.items() if str(n) not in killed]
    got = {"clean_final": s0["accuracy_mean"], "final": s1["accuracy_mean"],
           "restarts": s1["restarts"], "failed": len(s1["failed_nodes"]),
           "restarted_nodes": {n: a for n, a in final.items() if str(n) in killed},
           "others_mean": float(np.mean(rest)),
           "rounds_per_node": dict(Counter(r["node"] for r in r1))}
    print(f"  {got}", flush=True)
    return got


def coordinator(out: str) -> dict:
    base = ["--mode", "fedavg", "--nodes", "10", "--dataset", "digits", "--rounds", "60",
            "--restart", "on-failure"]
    s0, _ = cluster(os.path.join(out, "runs", "coord_clean"), *base)
    s1, r1 = cluster(os.path.join(out, "runs", "coord_killed"), *base,
                     kill=({"coordinator"}, lambda recs: sum(
                         r["role"] == "coordinator" for r in recs) >= 20))
    rounds = sorted(r["round"] for r in r1 if r["role"] == "coordinator")
    per = defaultdict(int)
    for r in r1:
        per[(r["node"], r["round"])] += 1
    got = {"clean_final": s0["accuracy_mean"], "final": s1["accuracy_mean"],
           "restarts": s1["restarts"], "rounds_once": rounds == list(range(1, 61)),
           "duplicate_records": sum(1 for v in per.values() if v > 1)}
    print(f"  {got}", flush=True)
    return got


PARTS = {"emulator": emulator, "links": links, "links_eval5": links_eval5, "stragglers": stragglers, "churn": churn, "crash": crash,
         "coordinator": coordinator}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="*", help=f"which of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--out", default="benchmarks/results/real_networks")
    args = ap.parse_args(argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; valid: {', '.join(PARTS)}")
    os.makedirs(args.out, exist_ok=True)
    for name in args.parts or list(PARTS):
        print(f"{name}:", flush=True)
        t = time.monotonic()
        got = PARTS[name](args.out)
        got["benchmark_s"] = time.monotonic() - t
        write_json_atomic(os.path.join(args.out, f"{name}.json"), got)
    return 0


if __name__ == "__main__":
    sys.exit(main())
