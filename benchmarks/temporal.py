"""Temporal CABAC contexts (issue 11): two overlapping updates, then gossip runs.

    python benchmarks/temporal.py [--rounds 30] [--seeds 0 1]
                                  [--parts synthetic gossip server cfd]

Part 1, the second of two top-1 % updates of 10^6 values (step 2^-10) whose
supports overlap by about 60 %, coded with plain and with temporal contexts:
consecutive updates x2 = ρ·x1 + sqrt(1 − ρ²)·noise (ρ = 0.93), and, as a bound on
what the support alone gives, two supports with 60 % overlap and independent values.
Part 2, gossip on ring:8 with ``topk:0.05+quant:0.002+cabac`` against
``...+cabac:temporal`` on digits (MLP) and mnist1d (CNN), with CHOCO and with
DCD-PSGD (``--algorithm dpsgd --error-feedback off``): accuracy, bytes sent and
bytes on the wire (framing included), averaged over seeds.  Part 3, server modes
(10 workers) with that codec on the updates: STC with error feedback off and on,
and FedAvg without it.  Part 4, CFD's soft labels (1 and 2 bits) with each
``--fd-coder``: packed, cabac, cabac:temporal.  Writes
benchmarks/results/temporal.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl import run_cluster  # noqa: E402
from p2pfl.compression import cabac  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402

N, STEP = 10 ** 6, 2.0 ** -10


def _top1(x):
    k = x.size // 100
    idx = np.argpartition(np.abs(x), x.size - k)[x.size - k:]
    levels = np.zeros(x.size, np.int32)
    levels[idx] = np.round(x[idx] / STEP)
    return levels


def pair(kind: str, rng):
    if kind == "consecutive":
        x1 = rng.normal(0, 1e-3, N)
        x2 = 0.93 * x1 + np.sqrt(1 - 0.93 ** 2) * rng.normal(0, 1e-3, N)
        return _top1(x1), _top1(x2)
    k = N // 100  # independent values on supports that overlap by 60 %
    s1 = rng.choice(N, k, replace=False)
    keep = rng.choice(s1, int(0.6 * k), replace=False)
    new = rng.choice(np.setdiff1d(np.arange(N), s1), k - keep.size, replace=False)
    a, b = np.zeros(N, np.int32), np.zeros(N, np.int32)
    for lv, s in ((a, s1), (b, np.concatenate([keep, new]))):
        v = np.round(rng.normal(0, 4e-3, s.size) / STEP).astype(np.int32)
        lv[s] = np.where(v == 0, 1, v)
    return a, b


def synthetic() -> list:
    rows = []
    for kind in ("consecutive", "independent values"):
        a, b = pair(kind, np.random.default_rng(0))
        plain = cabac.encode_levels(b)
        temporal = cabac.encode_levels(b, reference=a)
        overlap = np.count_nonzero((a != 0) & (b != 0)) / np.count_nonzero(b)
        row = {"pair": kind, "overlap": overlap, "plain_bits_per_param": 8 * len(plain) / N,
               "temporal_bits_per_param": 8 * len(temporal) / N,
               "saving": 1 - len(temporal) / len(plain)}
        rows.append(row)
        print(f"{kind:20s} overlap {overlap:.2f}: plain {row['plain_bits_per_param']:.4f}, "
              f"temporal {row['temporal_bits_per_param']:.4f} bits/param, saving "
              f"{100 * row['saving']:.1f} %", flush=True)
    return rows


#: The gossip rules compared: CHOCO (error feedback through the public copies) and
#: DCD-PSGD (D-PSGD over compressed differences without error feedback).
ALGORITHMS = (("choco", {}), ("dcd-psgd", dict(algorithm="dpsgd", error_feedback="off")))
DATA_SETS = (("digits mlp", {}), ("mnist1d cnn", dict(dataset="mnist1d", model="cnn")))
SPEC = "topk:0.05+quant:0.002+cabac"


def _pair(label: dict, keys: tuple, run) -> list:
    """Plain and temporal rows of one setting: ``run(codec, seed) -> summary``, each
    key averaged over the seeds; the temporal row gets ``fewer_<key>`` for the byte
    counts (``keys[1:]``)."""
    rows = []
    for codec in (SPEC, SPEC + ":temporal"):
        runs = run(codec)
        rows.append({**label, "codec": codec,
                     **{k: float(np.mean([s[k] for s in runs])) for k in keys}})
        print(" ".join(map(str, label.values())), f"{codec:40s}",
              " ".join(f"{k} {rows[-1][k]:.4f}" for k in keys), flush=True)
    for key in keys[1:]:
        rows[1]["fewer_" + key] = 1 - rows[1][key] / rows[0][key]
        print(f"  temporal: {100 * rows[1]['fewer_' + key]:.2f} % fewer {key}", flush=True)
    return rows


def gossip(rounds: int, seeds: list) -> list:
    """Gossip on ring:8 with each rule of ALGORITHMS: accuracy, bytes sent and on the wire."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rule, rule_opts in ALGORITHMS:
            for data, extra in DATA_SETS:
                def run(codec):
                    return [run_cluster(topology="ring:8", rounds=rounds, compression=codec,
                                        seed=seed, quiet=True, **extra, **rule_opts,
                                        out=os.path.join(tmp, f"{len(rows)}-{codec}-{seed}")
                                        ).summary for seed in seeds]
                rows += _pair({"algorithm": rule, "data": data},
                              ("accuracy_mean", "bytes_sent_total", "wire_bytes_total"), run)
    return rows


def server(rounds: int, seeds: list) -> list:
    """Server modes, 10 workers, the codec on the workers' updates (the downstream is
    plain): STC with and without error feedback, and FedAvg with compressed updates
    without it.  Accuracy, bytes in all and upstream alone."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, ef in (("stc", "off"), ("stc", "on"), ("fedavg", "off")):
            for data, extra in DATA_SETS:
                def run(codec):
                    return [run_cluster(topology="ring:10", mode=mode, rounds=rounds,
                                        compression=codec, error_feedback=ef, seed=seed,
                                        quiet=True, **extra,
                                        out=os.path.join(tmp, f"s{len(rows)}-{codec}-{seed}")
                                        ).summary for seed in seeds]
                rows += _pair({"mode": mode, "error_feedback": ef, "data": data},
                              ("accuracy_mean", "bytes_sent_total", "bytes_up_total"), run)
    return rows


def cfd(rounds: int, seeds: list) -> list:
    """CFD (10 workers) with each soft-label coder, at 1 and 2 bits: the labels are
    the same whatever the coder (lossless), so accuracy is too; bytes in all, up
    and down.  ``cabac`` against ``cabac:temporal`` isolates the temporal contexts."""
    rows = []
    keys = ("accuracy_mean", "bytes_sent_total", "bytes_up_total", "bytes_down_total")
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (1, 2):
            for data, extra in DATA_SETS:
                for coder in ("packed", "cabac", "cabac:temporal"):
                    runs = [run_cluster(topology="ring:10", mode="cfd", rounds=rounds,
                                        fd_bits=bits, fd_coder=coder, seed=seed, quiet=True,
                                        **extra, out=os.path.join(tmp, f"c{len(rows)}-{seed}")
                                        ).summary for seed in seeds]
                    rows.append({"bits": bits, "data": data, "coder": coder,
                                 **{k: float(np.mean([r[k] for r in runs])) for k in keys}})
                    print(f"cfd {bits} bit {data} {coder:15s}",
                          " ".join(f"{k} {rows[-1][k]:.4f}" for k in keys), flush=True)
                packed, plain, temporal = rows[-3:]
                for key in keys[1:]:
                    temporal["fewer_" + key + "_than_cabac"] = 1 - temporal[key] / plain[key]
                    temporal["fewer_" + key + "_than_packed"] = 1 - temporal[key] / packed[key]
                print(f"  temporal: {100 * temporal['fewer_bytes_sent_total_than_cabac']:.2f} % "
                      f"fewer bytes than cabac, "
                      f"{100 * temporal['fewer_bytes_sent_total_than_packed']:.2f} % than packed",
                      flush=True)
    return rows


#: Each part takes (rounds, seeds); the synthetic pair needs neither.
PARTS = {"synthetic": lambda rounds, seeds: synthetic(), "gossip": gossip, "server": server,
         "cfd": cfd}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS),
                    help="which parts to run now (the others are kept from the last run)")
    args = ap.parse_args()
    path = os.path.join(ROOT, "benchmarks", "results", "temporal.json")
    result = {}
    if os.path.exists(path):
        with open(path) as fh:
            result = {k: v for k, v in json.load(fh).items() if k in PARTS or
                      k.endswith("_setting")}
    for part in args.parts:
        result[part] = PARTS[part](args.rounds, args.seeds)
        result[part + "_setting"] = {"rounds": args.rounds, "seeds": args.seeds}
    write_json_atomic(path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
