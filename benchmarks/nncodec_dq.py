"""Dependent quantisation against NNCodec's (issue 11): bits at equal RMSE.

    python benchmarks/nncodec_dq.py --nnc-python ../nncvenv/bin/python [--model big|fc4096]

NNCodec 2.1.3 (in its own venv, see nncodec_compare.py) codes the trained CNN's
kernels at qp -28, -30, ..., -38 (qp_density 2: step 2^(qp/4)), without and with
its dependent quantisation (``use_dq``), no RDOQ (``lambda_scale`` 0), one
thread.  This process codes the same kernels per tensor with ``quant:Δ+cabac``
and ``dq:Δ+cabac`` on grids of steps 2^(-k/4).  Each NNCodec point is set
against our bits at its RMSE (log-log interpolation on our two curves), and
each side's DQ encode and decode is timed once per point.  Writes
benchmarks/results/nncodec_dq.json (nncodec_dq_fc4096.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
QPS = (-28, -30, -32, -34, -36, -38)


def nncodec_side(npz: str, out: str) -> None:
    """Under NNCodec's interpreter: each qp without and with DQ."""
    from nncodec_compare import nncodec_compression

    compression = nncodec_compression()
    params = dict(np.load(npz))
    n = sum(v.size for v in params.values())
    points = []
    for qp in QPS:
        for dq in (False, True):
            t0 = time.perf_counter()
            bits = compression.compress(params, bitstream_path=out + ".nnc", qp=qp, qp_density=2,
                                        use_dq=dq, lambda_scale=0, param_opt=False, opt_qp=False,
                                        return_bitstream=True, verbose=False)
            t1 = time.perf_counter()
            back = compression.decompress(bits)
            t2 = time.perf_counter()
            se = sum(float(((np.asarray(back[k], np.float64) - v.astype(np.float64)) ** 2).sum())
                     for k, v in params.items())
            points.append({"qp": qp, "dq": dq, "bits_per_param": 8 * len(bits) / n,
                           "rmse": (se / n) ** 0.5, "encode_s": t1 - t0, "decode_s": t2 - t1})
    with open(out, "w") as fh:
        json.dump(points, fh)


def our_curve(kind: str, ks, weights: dict) -> list:
    import torch

    from p2pfl.compression import make_codec, wire_size

    shapes = [w.shape for w in weights.values()]
    flat = torch.cat([torch.from_numpy(w.reshape(-1)) for w in weights.values()])
    points = []
    for k in ks:
        codec = make_codec(f"{kind}:{2.0 ** (-k / 4)!r}+cabac", shapes=shapes)
        t0 = time.perf_counter()
        frames = codec.encode(flat)
        t1 = time.perf_counter()
        back = codec.decode(frames)
        t2 = time.perf_counter()
        points.append({"step": f"2^-{k / 4:g}",
                       "bits_per_param": 8 * wire_size(frames) / flat.numel(),
                       "rmse": float(((back - flat).double() ** 2).mean().sqrt()),
                       "encode_s": t1 - t0, "decode_s": t2 - t1})
    return points


def bits_at(curve: list, rmse: float) -> float:
    b = np.log([p["bits_per_param"] for p in curve])
    r = np.log([p["rmse"] for p in curve])
    order = np.argsort(r)
    return float(np.exp(np.interp(np.log(rmse), r[order], b[order])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nnc-python", default=os.path.join(ROOT, "..", "nncvenv", "bin", "python"))
    ap.add_argument("--model", choices=("big", "fc4096"), default="big")
    ap.add_argument("--nnc-side", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nnc_side:
        nncodec_side(*args.nnc_side)
        return 0
    if not os.path.exists(args.nnc_python):
        print(f"blocked: no NNCodec interpreter at {args.nnc_python} (see nncodec_compare.py)")
        return 1
    sys.path.insert(0, ROOT)
    from _cnn import kernels, trained

    from p2pfl.metrics import write_json_atomic

    weights = kernels(trained(args.model)[0])
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = os.path.join(tmp, "w.npz"), os.path.join(tmp, "nnc.json")
        np.savez(npz, **weights)
        subprocess.run([args.nnc_python, os.path.abspath(__file__), "--nnc-side", npz, out],
                       check=True)
        theirs = json.load(open(out))
    plain, dq = our_curve("quant", range(24, 44), weights), our_curve("dq", range(26, 46), weights)
    print(f"{args.model}: {sum(w.size for w in weights.values())} kernel weights; bits/param at "
          "NNCodec's RMSE")
    print("| NNCodec qp | NNCodec DQ | RMSE | NNCodec | ours, quant | ours, dq | dq vs NNCodec |")
    print("|---|---|---|---|---|---|---|")
    for p in theirs:
        p["ours_quant_bits_at_rmse"] = bits_at(plain, p["rmse"])
        p["ours_dq_bits_at_rmse"] = bits_at(dq, p["rmse"])
        gain = 1 - p["ours_dq_bits_at_rmse"] / p["bits_per_param"]
        print(f"| {p['qp']} | {'on' if p['dq'] else 'off'} | {p['rmse']:.3e} | "
              f"{p['bits_per_param']:.4f} | {p['ours_quant_bits_at_rmse']:.4f} | "
              f"{p['ours_dq_bits_at_rmse']:.4f} | {100 * gain:+.2f} % |")
    mb = 4 * sum(w.size for w in weights.values()) / 1e6
    nnc_dq = [p for p in theirs if p["dq"]]
    print(f"DQ encode MB/s: NNCodec {mb / max(p['encode_s'] for p in nnc_dq):.1f}-"
          f"{mb / min(p['encode_s'] for p in nnc_dq):.1f}, ours "
          f"{mb / max(p['encode_s'] for p in dq):.1f}-{mb / min(p['encode_s'] for p in dq):.1f}; "
          f"decode MB/s: NNCodec {mb / max(p['decode_s'] for p in nnc_dq):.1f}-"
          f"{mb / min(p['decode_s'] for p in nnc_dq):.1f}, ours "
          f"{mb / max(p['decode_s'] for p in dq):.1f}-{mb / min(p['decode_s'] for p in dq):.1f}")
    name = "nncodec_dq.json" if args.model == "big" else f"nncodec_dq_{args.model}.json"
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", name),
                      {"model": args.model, "nncodec": theirs, "ours_quant": plain, "ours_dq": dq})
    return 0


if __name__ == "__main__":
    sys.exit(main())
