"""Our CABAC against Fraunhofer's NNCodec 2.1.3 on trained CNN weights (issue 11).

NNCodec lives in a virtual environment of its own, never a dependency of p2pfl::

    python3 -m venv ../nncvenv && ../nncvenv/bin/pip install torch==2.13.0 nncodec==2.1.3
    python benchmarks/nncodec_compare.py --nnc-python ../nncvenv/bin/python [--model fc4096]

This process trains a CNN (benchmarks/_cnn.py: ``big``, 1.13 M parameters, or
``fc4096``, issue 11's 1.07 M-parameter shape with a 256 x 4096 layer), codes its
weight tensors (conv and linear kernels; biases left out, since NNCodec codes
them at another step) with ``quant:2^-8+cabac`` per tensor, and
writes them to a temporary .npz.  The NNCodec interpreter then codes the same
float32 tensors with the same uniform step (qp = -32 at qp_density 2, i.e.
2^(-32/4)), no dependent quantisation, no RDOQ (lambda_scale 0), no parameter
optimisation, and decodes them.  Both sides report bits per parameter (whole
message or bitstream, headers included) and encode / decode MB/s of float32
input, best of --repeat, one thread, one after the other in this run; the
integer levels are compared one by one, and each tensor is also coded alone
by both sides (untimed) for its bits per parameter.  NNCodec's ``framework`` package imports
torchvision, whose wheels here do not load beside CPU torch; its compress path
does not use it, so the NNCodec side stubs that package out.
Writes benchmarks/results/nncodec.json (``big``) or nncodec_fc4096.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 2.0 ** -8


def nncodec_compression():
    """NNCodec's ``nnc.compression`` (under NNCodec's interpreter), with its
    ``framework`` package stubbed out: it imports torchvision, which does not load
    beside CPU torch here, and the compress path does not use it."""
    import types

    framework = types.ModuleType("nncodec.framework")
    for name in ("tensorflow_model", "pytorch_model", "use_case_init"):
        mod = types.ModuleType(f"nncodec.framework.{name}")
        setattr(framework, name, mod)
        sys.modules[mod.__name__] = mod
    sys.modules["nncodec.framework"] = framework
    from nncodec.nnc import compression

    return compression


def nncodec_side(npz: str, out: str, repeat: int) -> None:
    """Runs under NNCodec's interpreter: code, decode, time, return levels."""
    compression = nncodec_compression()
    sys.path.insert(0, ROOT)
    from p2pfl.compression.bench import _best_of

    params = dict(np.load(npz))

    def encode():
        return compression.compress(params, bitstream_path=out + ".nnc", qp=-32,
                                    qp_density=2, use_dq=False, lambda_scale=0,
                                    param_opt=False, opt_qp=False, return_bitstream=True,
                                    verbose=False)

    enc_s, bitstream = _best_of(encode, repeat)
    dec_s, decoded = _best_of(lambda: compression.decompress(bitstream), repeat)
    per_tensor = {}
    for name, w in params.items():
        alone = compression.compress({name: w}, bitstream_path=out + ".one.nnc", qp=-32,
                                     qp_density=2, use_dq=False, lambda_scale=0,
                                     param_opt=False, opt_qp=False, return_bitstream=True,
                                     verbose=False)
        per_tensor[name] = 8 * len(alone) / w.size
    levels = {k: np.rint(np.asarray(v, np.float64) / STEP).astype(np.int32)
              for k, v in decoded.items()}
    np.savez(out, **levels)
    with open(out + ".json", "w") as fh:
        json.dump({"bytes": len(bitstream), "encode_s": enc_s, "decode_s": dec_s,
                   "per_tensor_bits_per_param": per_tensor}, fh)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nnc-python", default=os.path.join(ROOT, "..", "nncvenv", "bin", "python"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", choices=("big", "fc4096"), default="big")
    ap.add_argument("--epochs", type=int, help="training epochs (default 3 for big, "
                    "10 for fc4096)")
    ap.add_argument("--nnc-side", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nnc_side:
        nncodec_side(*args.nnc_side, args.repeat)
        return 0
    if not os.path.exists(args.nnc_python):
        print(f"blocked: no NNCodec interpreter at {args.nnc_python} (see the docstring)")
        return 1
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    from _cnn import kernels, trained

    from p2pfl.compression import cabac, make_codec, wire_size
    from p2pfl.compression.bench import _best_of
    from p2pfl.metrics import write_json_atomic

    model, ds = trained(args.model, args.epochs)
    with torch.no_grad():
        accuracy = float((model(torch.as_tensor(ds.x_test)).argmax(1).numpy()
                          == ds.y_test).mean())
    weights = kernels(model)
    numel = sum(w.size for w in weights.values())
    shapes = [w.shape for w in weights.values()]
    flat = torch.cat([torch.from_numpy(w.reshape(-1)) for w in weights.values()])
    codec = make_codec(f"quant:{STEP!r}+cabac", shapes=shapes)
    enc_s, frames = _best_of(lambda: codec.encode(flat), args.repeat)
    dec_s, back = _best_of(lambda: codec.decode(frames), args.repeat)
    ours = {"bytes": wire_size(frames), "encode_s": enc_s, "decode_s": dec_s}
    our_levels = np.rint(back.numpy().astype(np.float64) / STEP).astype(np.int32)
    per_tensor = {k: 8 * len(cabac.encode_levels(np.rint(w.reshape(-1).astype(np.float64) / STEP)
                                                 .astype(np.int32))) / w.size
                  for k, w in weights.items()}
    levels_only = sum(per_tensor[k] * w.size / 8 for k, w in weights.items())
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = os.path.join(tmp, "w.npz"), os.path.join(tmp, "nnc.npz")
        np.savez(npz, **weights)
        subprocess.run([args.nnc_python, os.path.abspath(__file__), "--repeat",
                        str(args.repeat), "--nnc-side", npz, out], check=True)
        theirs = json.load(open(out + ".json"))
        nnc_levels = dict(np.load(out))
    their_levels = np.concatenate([nnc_levels[k].reshape(-1) for k in weights])
    mb = 4 * numel / 1e6
    result = {"model": args.model, "accuracy": accuracy, "numel": numel,
              "tensors": {k: list(w.shape) for k, w in weights.items()},
              "step": "2^-8", "mismatched_levels": int(np.count_nonzero(our_levels
                                                                       != their_levels)),
              "ours": {**ours, "bits_per_param": 8 * ours["bytes"] / numel,
                       "levels_only_bits_per_param": 8 * levels_only / numel,
                       "per_tensor_bits_per_param": per_tensor,
                       "encode_MBps": mb / ours["encode_s"], "decode_MBps": mb / ours["decode_s"]},
              "nncodec": {**theirs, "bits_per_param": 8 * theirs["bytes"] / numel,
                          "encode_MBps": mb / theirs["encode_s"],
                          "decode_MBps": mb / theirs["decode_s"]}}
    result["encode_speedup"] = theirs["encode_s"] / ours["encode_s"]
    result["decode_speedup"] = theirs["decode_s"] / ours["decode_s"]
    o, t = result["ours"], result["nncodec"]
    print(f"{numel} weights of the trained CNN {args.model} (accuracy {accuracy:.4f}), step "
          f"2^-8; {result['mismatched_levels']} mismatched levels")
    for k in weights:
        print(f"  {k} {list(weights[k].shape)}: ours {per_tensor[k]:.4f}, NNCodec "
              f"{theirs['per_tensor_bits_per_param'][k]:.4f} bits/param, each coded alone")
    print(f"ours    {o['bits_per_param']:.4f} bits/param (levels alone "
          f"{o['levels_only_bits_per_param']:.4f}), {o['encode_MBps']:.0f} / "
          f"{o['decode_MBps']:.0f} MB/s")
    print(f"NNCodec {t['bits_per_param']:.4f} bits/param, {t['encode_MBps']:.0f} / "
          f"{t['decode_MBps']:.0f} MB/s")
    print(f"speed: encode {result['encode_speedup']:.1f}x, decode "
          f"{result['decode_speedup']:.1f}x NNCodec's")
    name = "nncodec.json" if args.model == "big" else f"nncodec_{args.model}.json"
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", name), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
