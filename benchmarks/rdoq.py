"""Rate–distortion quantisation against nearest rounding on trained CNN weights (issue 11).

    python benchmarks/rdoq.py [--epochs 3] [--lambdas 0.05 0.1 0.2]

Trains a 2-D CNN of 1.13 M parameters (conv 1→64→128, 3x3; max-pool to 4x4;
linear 2048→512→10) on digits with p2pfl's own trainer, then codes its weights
per tensor with ``quant:Δ+cabac`` (nearest level) on a fine grid of steps, and
with ``quant:Δ:rd=λ+cabac`` for each λ at a few steps.  For each RD point it
prints bits/param, RMSE and test accuracy, and the bits plain rounding needs
at the same RMSE (log-log interpolation on its curve): the saving.  Writes
benchmarks/results/rdoq.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cnn import trained_cnn  # noqa: E402
from p2pfl.compression import make_codec, wire_size  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.models import assign_params, flatten_params  # noqa: E402
from p2pfl.training import evaluate  # noqa: E402


def point(model, flat, shapes, ds, spec: str) -> dict:
    codec = make_codec(spec, shapes=shapes)
    t0 = time.perf_counter()
    frames = codec.encode(flat)
    enc_s = time.perf_counter() - t0
    out = codec.decode(frames)
    assign_params(model, out)
    _, acc = evaluate(model, ds.x_test, ds.y_test)
    rmse = float(torch.sqrt(torch.mean((out - flat) ** 2)))
    return {"spec": spec, "bits_per_param": 8 * wire_size(frames) / flat.numel(),
            "rmse": rmse, "accuracy": acc, "encode_s": enc_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    args = ap.parse_args()
    model, ds = trained_cnn(args.epochs)
    flat = flatten_params(model)
    shapes = [tuple(p.shape) for p in model.parameters()]
    _, base = evaluate(model, ds.x_test, ds.y_test)
    print(f"{flat.numel()} parameters, float32 accuracy {base:.4f}", flush=True)
    plain = [point(model, flat, shapes, ds, f"quant:{2.0 ** (-k / 4)!r}+cabac")
             for k in range(20, 45)]
    pb = np.log([p["bits_per_param"] for p in plain])
    pr = np.log([p["rmse"] for p in plain])
    order = np.argsort(pr)
    rows = []
    for lam in args.lambdas:
        for k in (24, 28, 32, 36):
            p = point(model, flat, shapes, ds, f"quant:{2.0 ** (-k / 4)!r}:rd={lam}+cabac")
            ref = plain[k - 20]
            at = float(np.exp(np.interp(np.log(p["rmse"]), pr[order], pb[order])))
            p.update(step=f"2^-{k / 4:g}", lam=lam, plain_bits_at_rmse=at,
                     saving=1 - p["bits_per_param"] / at,
                     accuracy_plain_same_step=ref["accuracy"],
                     encode_ratio_vs_plain=p["encode_s"] / ref["encode_s"])
            rows.append(p)
            print(f"rd={lam:<5g} step {p['step']:>6}: {p['bits_per_param']:.3f} bits/param, "
                  f"RMSE {p['rmse']:.2e}, plain at that RMSE {at:.3f} -> saving "
                  f"{100 * p['saving']:+.2f} %, acc {p['accuracy']:.4f} (plain, same step "
                  f"{ref['accuracy']:.4f}), encode {p['encode_ratio_vs_plain']:.1f}x plain",
                  flush=True)
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "rdoq.json"),
                      {"params": flat.numel(), "accuracy_float32": base, "plain": plain,
                       "rd": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
