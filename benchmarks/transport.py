"""Transport throughput against raw pyzmq, in the same run (issue 10).

    python benchmarks/transport.py [--rounds 20] [--warmup 5] [--cpu-policy batch]

* ``ours``: ``p2pfl cluster --topology ring:8 --local-steps 0`` (exchange only: every
  round each node sends its whole model to both neighbours and waits for theirs) with
  models of about 10 K, 1 M and 10 M float32 parameters (``mlp:135``, ``mlp:13500``,
  ``mlp:135000`` on digits).  Throughput = bytes sent in the timed rounds / time
  from the end of the last warm-up round to the end of the last round (the nodes'
  own clocks), over ``--rounds`` rounds (the 10 K case: 100 times as many, after 10
  times the warm-up; ``SMALL_ROUNDS``).  Every contender first runs ``--warmup``
  rounds that are not timed:
  the first rounds fault in the process's model-sized buffers as the heap grows to
  its steady state (at 10 M parameters rounds 2–5 took about 0.6 s each, later
  ones 0.1–0.4 s).
* ``raw``: 8 processes in a ring, each with a PULL socket and a PUSH to each
  neighbour over loopback TCP, each sending the same vector to both neighbours and
  receiving two, the same number of times, in lock-step with nothing else to do.
* ``raw_kept``: the same, with the malloc setting our node processes make
  (``p2pfl/memory.py``: large buffers stay in the heap, so receiving a model does
  not page-fault its buffer in).  Plain ``raw`` pays those faults; ours does not,
  so against it ours can exceed 100 %.  Both ratios are printed.
* ``floor``: the least a Python gossip node does, on the same raw ring: a msgpack
  header (kind, sender, round, sequence, frame length, shape, dtype) in front of
  the vector, the header unpacked and its length checked on receipt, and the
  mixing-weighted sum of the three vectors by the C kernel (``weighted_sum``'s own
  C function, called directly).  No validation beyond that, no counters, records,
  time-outs or mailbox: the floor of a node loop written in Python.
* ``floor_nomix``: the floor without the mix (it keeps its own vector): what the
  mix costs on this ring is the difference between the two floors.

Every ring's processes, ours and the others, run under one scheduling policy,
``--cpu-policy`` (``p2pfl/scheduling.py``): batch by default, as p2pfl's node processes
do unless told otherwise; ``normal`` is Linux's default policy.

Alternates ours, raw, raw_kept, floor and floor_nomix per size; prints the ratio of
the medians and two per-message overheads, with the same figures for the floor:

* **CPU a message** (``cpu_overhead_us_per_message``): the CPU seconds (user and
  system, every thread, ZeroMQ's I/O thread included) the 8 node processes spend
  in the timed rounds, per message handled (each node sends 2 and receives 2 a
  round), ours minus raw.  Ours from the records' ``process_cpu_s``, raw and the
  floor from ``time.process_time()`` around their loops.  This is what our stack
  adds to each message, whatever the number of cores.
* **Wall time a round, per message a node handles** (``overhead_us_per_message``):
  (ours − raw) round time / 4.  With 8 node processes on 2 cores a round's wall
  time is about 4 nodes' CPU one after the other, so this counts each node's CPU
  about 4 times over (nodes / cores); it is what a round costs a user here.

Writes benchmarks/results/transport.json, and the same medians as a table in
transport.md (``--table`` rewrites the table from the JSON without measuring).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _results import round_span  # noqa: E402
from p2pfl.atomic import write_atomic  # noqa: E402
from p2pfl.metrics import read_metrics, write_json_atomic  # noqa: E402
from p2pfl.scheduling import CPU_POLICIES  # noqa: E402

SIZES = {"10K": "mlp:135", "1M": "mlp:13500", "10M": "mlp:135000"}
#: The 10 K case runs this many times ``--rounds`` (2,000 by default) after this many
#: times ``--warmup``: its rounds take about a millisecond, and the 200 it ran before
#: (a quarter of a second, right after start-up) moved its median by a tenth from run
#: to run (BENCHMARKS.md, "Tenth to thirteenth runs").
SMALL_ROUNDS, SMALL_WARMUP = 100, 10
NODES = 8


def _floor_round(i: int, rnd: int, x, pushes: list, pull, mix: bool = True) -> object:
    """One round of the least a Python gossip node does (see ``floor`` above)."""
    import msgpack  # imported before the timed rounds (_raw_node)
    import numpy as np

    from p2pfl.algorithms import _kernel

    data = memoryview(x).cast("B")
    for s in pushes:
        header = msgpack.packb([2, "model", i, rnd, rnd, 0, [data.nbytes], None,  # protocol 2
                                [[x.size]], ["float32"]])
        s.send_multipart([header, data], copy=False)
    got = []
    for _ in pushes:
        parts = pull.recv_multipart(copy=False)
        header = msgpack.unpackb(parts[0].buffer)
        if header[1] != "model" or header[6][0] != len(parts[1].buffer):
            raise RuntimeError("bad message")
        got.append(np.frombuffer(parts[1].buffer, dtype="<f4"))
    if not mix:
        return x
    out = np.empty_like(x)
    _kernel.weighted_sum(out, x, 1 / 3, tuple(got), (1 / 3, 1 / 3))
    return out


def _raw_node(i: int, ports: list, nbytes: int, rounds: int, barrier, out,
              keep: bool = False, floor: str = "", numel: int = 0, warmup: int = 0,
              policy: str = "batch") -> None:
    import numpy as np
    import zmq

    from p2pfl.scheduling import set_cpu_policy

    set_cpu_policy(policy)  # as our node processes run (--cpu-policy)

    if floor:  # what the floor's rounds use is imported before they are timed
        import importlib

        for name in ("msgpack", "p2pfl.algorithms._kernel"):
            importlib.import_module(name)
    if keep:  # the malloc setting our node processes use (p2pfl/memory.py)
        from p2pfl.memory import keep_large_blocks

        keep_large_blocks()

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        pull.bind(f"tcp://127.0.0.1:{ports[i]}")
    except zmq.ZMQError as exc:  # the port was taken since it was picked: the ring retries
        out.put(("error", i, str(exc)))
        ctx.destroy(linger=0)
        return
    pushes = []
    for j in ((i - 1) % NODES, (i + 1) % NODES):
        s = ctx.socket(zmq.PUSH)
        s.connect(f"tcp://127.0.0.1:{ports[j]}")
        pushes.append(s)
    data = bytes(nbytes)
    x = np.zeros(numel or nbytes // 4, dtype=np.float32)
    for s in pushes:  # warm the connections
        s.send(b"x")
    for _ in pushes:
        pull.recv()
    barrier.wait()
    for rnd in range(warmup + rounds):
        if rnd == warmup:
            barrier.wait()
            t0, cpu0 = time.perf_counter(), time.process_time()
        if floor:
            x = _floor_round(i, rnd, x, pushes, pull, mix=floor == "mix")
            continue
        for s in pushes:
            s.send(data, copy=False)
        for _ in pushes:
            pull.recv(copy=False)
    out.put((i, time.perf_counter() - t0, time.process_time() - cpu0))
    barrier.wait()
    ctx.destroy(linger=0)


class _PortTaken(RuntimeError):
    pass


def raw_ring(nbytes: int, rounds: int, keep: bool = False, floor: str = "",
             numel: int = 0, warmup: int = 0, policy: str = "batch") -> dict:
    """8 raw processes in a ring; a ring whose port was taken meanwhile is run again."""
    for _ in range(3):
        try:
            return _raw_ring_once(nbytes, rounds, keep, floor, numel, warmup, policy)
        except _PortTaken as exc:
            print(f"  (raw ring: {exc}; again with other ports)", flush=True)
    raise RuntimeError("raw ring: no free ports after 3 tries")


def _raw_ring_once(nbytes: int, rounds: int, keep: bool, floor: str, numel: int,
                   warmup: int, policy: str) -> dict:
    import socket

    ports = []
    for _ in range(NODES):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(NODES), ctx.Queue()
    procs = [ctx.Process(target=_raw_node, args=(i, ports, nbytes, rounds, barrier, out, keep,
                                                        floor, numel, warmup, policy))
             for i in range(NODES)]
    for p in procs:
        p.start()
    got = []
    while len(got) < NODES:
        g = out.get(timeout=600)
        if g[0] == "error":  # the others wait for it forever: stop them all
            for p in procs:
                p.terminate()
                p.join(10)
            raise _PortTaken(g[2])
        got.append(g)
    for p in procs:
        p.join(60)
    elapsed = max(g[1] for g in got)
    sent = NODES * 2 * rounds * nbytes
    return {"mb_s": sent / elapsed / 1e6, "s_per_round": elapsed / rounds,
            "cpu_us_per_message": 1e6 * sum(g[2] for g in got) / (NODES * 4 * rounds)}


def ours(model: str, rounds: int, tmp: str, warmup: int = 1, policy: str = "batch") -> dict:
    out = os.path.join(tmp, model.replace(":", "_"))
    last = warmup + rounds
    flags = ["--topology", "ring:8", "--dataset", "digits", "--model", model,
             "--local-steps", "0", "--rounds", str(last), "--no-consensus",
             "--cpu-policy", policy,
             "--round-timeout", "120", "-q", "--out", out]
    subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", *flags], cwd=ROOT,
                   check=True)
    recs = read_metrics(os.path.join(out, "metrics.jsonl"))
    elapsed, cpu = round_span(recs, warmup, last)
    cpu_s = sum(cpu.values())
    sent = sum(r["bytes_sent"] for r in recs if r["round"] > warmup)
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    return {"mb_s": sent / elapsed / 1e6, "s_per_round": elapsed / rounds,
            "cpu_us_per_message": 1e6 * cpu_s / (NODES * 4 * rounds),
            "message_bytes": sent // (NODES * 2 * rounds), "misses": s["misses_total"],
            "num_params": s["num_params"]}


def table(results: dict) -> str:
    """The measured medians of ``results`` (transport.json) as a markdown table."""
    rows = ["| size | MB/s: raw | raw, heap kept | floor | floor, no mix | ours | ours / raw | "
            "floor / raw | ms a round: raw / floor / ours | CPU µs a message: raw / floor / "
            "ours | ours − raw: CPU / wall µs a message |", "|" + "---|" * 11]
    for name, r in results.items():
        m = r["median"]
        mb = [f"{m[k]['mb_s']:,.0f}" if k in m else "—"
              for k in ("raw", "raw_kept", "floor", "floor_nomix", "ours")]
        ms = " / ".join(f"{1e3 * m[k]['s_per_round']:.2f}" for k in ("raw", "floor", "ours"))
        cpu = " / ".join(f"{m[k].get('cpu_us_per_message', float('nan')):,.0f}"
                         for k in ("raw", "floor", "ours"))
        rows.append(f"| {name} ({r['num_params']:,} params) | {' | '.join(mb)} | "
                    f"{100 * r['ours_over_raw']:.1f} % | {100 * r['floor_over_raw']:.1f} % | "
                    f"{ms} | {cpu} | {r.get('cpu_overhead_us_per_message', float('nan')):,.0f} / "
                    f"{r['overhead_us_per_message']:,.0f} |")
    rounds = "; ".join(f"{k}: {r['rounds']} timed rounds after {r.get('warmup_rounds', 1)} "
                       "warm-up, "
                       f"median of {len(r['runs']['ours'])} alternated runs, every process "
                       f"under the {r.get('cpu_policy', 'normal')} scheduling policy"
                       for k, r in results.items())
    return "\n".join(rows) + f"\n\n{rounds}. Written by `python benchmarks/transport.py`.\n"


def _write_table(json_path: str, results: dict) -> None:
    """transport.md beside ``json_path``, written atomically."""
    write_atomic(json_path[:-5] + ".md", lambda fh: fh.write(table(results)), text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed rounds first (at least 1)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES),
                    help="which sizes to measure now (the others are kept from the last run)")
    ap.add_argument("--cpu-policy", choices=CPU_POLICIES, default="batch",
                    help="the scheduling policy of every ring's processes, ours and raw "
                    "(ours: --cpu-policy; default batch, as p2pfl's own default)")
    ap.add_argument("--table", action="store_true",
                    help="only rewrite transport.md from transport.json")
    args = ap.parse_args()
    path = os.path.join(ROOT, "benchmarks", "results", "transport.json")
    if args.table:
        with open(path) as fh:
            _write_table(path, json.load(fh))
        return
    results = {}
    if os.path.exists(path):
        with open(path) as fh:
            results = {k: v for k, v in json.load(fh).items() if k not in args.sizes}
    with tempfile.TemporaryDirectory(prefix="p2pfl-transport-") as tmp:
        for name, model in SIZES.items():
            if name not in args.sizes:
                continue
            small = name == "10K"
            rounds = args.rounds * (SMALL_ROUNDS if small else 1)
            warmup = max(1, args.warmup) * (SMALL_WARMUP if small else 1)
            runs = {"raw": [], "raw_kept": [], "floor": [], "floor_nomix": [], "ours": []}
            for _ in range(args.repeats):
                policy = args.cpu_policy
                o = ours(model, rounds, tmp, warmup, policy)
                runs["raw"].append(raw_ring(o["message_bytes"], rounds, warmup=warmup,
                                            policy=policy))
                runs["raw_kept"].append(raw_ring(o["message_bytes"], rounds, keep=True,
                                                 warmup=warmup, policy=policy))
                for key, mode in (("floor", "mix"), ("floor_nomix", "nomix")):
                    runs[key].append(raw_ring(o["message_bytes"], rounds, keep=True, floor=mode,
                                              numel=o["num_params"], warmup=warmup,
                                              policy=policy))
                runs["ours"].append(o)
            med = {k: {m: statistics.median(r[m] for r in v)
                       for m in ("mb_s", "s_per_round", "cpu_us_per_message")}
                   for k, v in runs.items()}
            ratio = med["ours"]["mb_s"] / med["raw"]["mb_s"]
            ratio_kept = med["ours"]["mb_s"] / med["raw_kept"]["mb_s"]
            extra_us = 1e6 * (med["ours"]["s_per_round"] - med["raw"]["s_per_round"]) / 4
            floor_us = 1e6 * (med["floor"]["s_per_round"] - med["raw"]["s_per_round"]) / 4
            floor_ratio = med["floor"]["mb_s"] / med["raw"]["mb_s"]
            nomix_ratio = med["floor_nomix"]["mb_s"] / med["raw"]["mb_s"]
            cpu = {k: med[k]["cpu_us_per_message"] - med["raw"]["cpu_us_per_message"]
                   for k in ("ours", "floor")}
            results[name] = {"model": model, "num_params": o["num_params"],
                             "cpu_policy": args.cpu_policy,
                             "message_bytes": o["message_bytes"], "rounds": rounds,
                             "warmup_rounds": warmup,
                             "runs": runs, "median": med, "ours_over_raw": ratio,
                             "ours_over_raw_kept": ratio_kept,
                             "overhead_us_per_message": extra_us,
                             "floor_over_raw": floor_ratio,
                             "floor_overhead_us_per_message": floor_us,
                             "cpu_overhead_us_per_message": cpu["ours"],
                             "floor_cpu_overhead_us_per_message": cpu["floor"],
                             "floor_nomix_over_raw": nomix_ratio}
            print(f"  {name:>3} params ({o['num_params']:,}, {o['message_bytes']:,} B a message):"
                  f" ours {med['ours']['mb_s']:.0f} MB/s, raw {med['raw']['mb_s']:.0f} MB/s "
                  f"-> {100 * ratio:.1f} % (raw with our malloc setting "
                  f"{med['raw_kept']['mb_s']:.0f} MB/s -> {100 * ratio_kept:.1f} %); "
                  f"{1e3 * med['ours']['s_per_round']:.2f} vs "
                  f"{1e3 * med['raw']['s_per_round']:.2f} ms a round ({extra_us:.0f} µs more a "
                  f"message sent or received); misses {o['misses']}; the Python floor "
                  f"{100 * floor_ratio:.1f} % of raw, {1e3 * med['floor']['s_per_round']:.2f} ms a "
                  f"round ({floor_us:.0f} µs more a message); CPU a message handled: ours "
                  f"{med['ours']['cpu_us_per_message']:.0f} µs, raw "
                  f"{med['raw']['cpu_us_per_message']:.0f} µs, floor "
                  f"{med['floor']['cpu_us_per_message']:.0f} µs (ours {cpu['ours']:.0f} µs "
                  f"more than raw, the floor {cpu['floor']:.0f} µs); the floor without the mix "
                  f"{100 * nomix_ratio:.1f} % of raw", flush=True)
    results = {k: results[k] for k in SIZES if k in results}
    write_json_atomic(path, results)
    _write_table(path, results)


if __name__ == "__main__":
    main()
