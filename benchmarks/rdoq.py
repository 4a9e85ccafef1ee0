"""Rate–distortion quantisation against nearest rounding on trained CNN weights (issue 11).

    python benchmarks/rdoq.py [--epochs 3] [--lambdas 0.05 0.1 0.2] [--dq-lambdas 0 0.1]
                              [--model big|fc4096]

Trains a 2-D CNN of 1.13 M parameters (conv 1→64→128, 3x3; max-pool to 4x4;
linear 2048→512→10) on digits with p2pfl's own trainer, then codes its weights
per tensor with ``quant:Δ+cabac`` (nearest level) on a fine grid of steps, and
with ``quant:Δ:rd=λ+cabac`` for each λ at a few steps, and with dependent
quantisation ``dq:Δ[:rd=λ]+cabac`` at a few steps (its accuracy is compared with
plain rounding's at the nearest RMSE).  For each RD point it
prints bits/param, RMSE and test accuracy, and the bits plain rounding needs
at the same RMSE (log-log interpolation on its curve): the saving.  Writes
benchmarks/results/rdoq.json (rdoq_fc4096.json for ``--model fc4096``, issue
11's CNN shape, 10 epochs of Adam; ``--epochs`` is for ``big``).
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

from _cnn import trained  # noqa: E402
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
    ap.add_argument("--epochs", type=int, help="training epochs of big (default 3)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--dq-lambdas", type=float, nargs="+", default=[0.0, 0.1])
    ap.add_argument("--model", choices=("big", "fc4096"), default="big")
    args = ap.parse_args()
    model, ds = trained(args.model, args.epochs if args.model == "big" else None)
    flat = flatten_params(model)
    shapes = [tuple(p.shape) for p in model.parameters()]
    _, base = evaluate(model, ds.x_test, ds.y_test)
    print(f"{flat.numel()} parameters, float32 accuracy {base:.4f}", flush=True)
    plain = [point(model, flat, shapes, ds, f"quant:{2.0 ** (-k / 4)!r}+cabac")
             for k in range(20, 45)]
    pb = np.log([p["bits_per_param"] for p in plain])
    pr = np.log([p["rmse"] for p in plain])
    order = np.argsort(pr)
    rmses = np.array([p["rmse"] for p in plain])

    def versus_plain(spec: str, step: str, lam: float, same_step: dict | None) -> dict:
        p = point(model, flat, shapes, ds, spec)
        at = float(np.exp(np.interp(np.log(p["rmse"]), pr[order], pb[order])))
        near = plain[int(np.argmin(np.abs(np.log(rmses / p["rmse"]))))]
        ref = same_step or near
        p.update(step=step, lam=lam, plain_bits_at_rmse=at, saving=1 - p["bits_per_param"] / at,
                 accuracy_plain_nearest_rmse=near["accuracy"],
                 encode_ratio_vs_plain=p["encode_s"] / ref["encode_s"])
        if same_step:
            p["accuracy_plain_same_step"] = same_step["accuracy"]
        name = spec.split("+")[0].split(":")[0] + (f" rd={lam:g}" if lam else "")
        print(f"{name:<10} step {step:>6}: {p['bits_per_param']:.3f} bits/param, RMSE "
              f"{p['rmse']:.2e}, plain at that RMSE {at:.3f} -> saving {100 * p['saving']:+.2f} %,"
              f" acc {p['accuracy']:.4f} (plain at the nearest RMSE {near['accuracy']:.4f}), "
              f"encode {p['encode_ratio_vs_plain']:.1f}x plain", flush=True)
        return p

    rows = [versus_plain(f"quant:{2.0 ** (-k / 4)!r}:rd={lam}+cabac", f"2^-{k / 4:g}", lam,
                         plain[k - 20])
            for lam in args.lambdas for k in (24, 28, 32, 36)]
    dq_rows = [versus_plain(f"dq:{2.0 ** (-k / 4)!r}" + (f":rd={lam}" if lam else "") + "+cabac",
                            f"2^-{k / 4:g}", lam, None)
               for lam in args.dq_lambdas for k in (28, 30, 32, 34, 36, 38)]
    name = "rdoq.json" if args.model == "big" else f"rdoq_{args.model}.json"
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", name),
                      {"model": args.model, "params": flat.numel(), "accuracy_float32": base,
                       "plain": plain, "rd": rows, "dq": dq_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
