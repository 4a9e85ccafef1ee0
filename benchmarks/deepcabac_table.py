"""A DeepCABAC-style table at laptop scale (issue 11): size against accuracy.

    python benchmarks/deepcabac_table.py [--epochs 40] [--steps 4 5 6 7 8 9]

Trains the 2-D CNN on digits (8x8 images, 9,930 parameters) and the 1-D CNN on
mnist1d (8,010) centrally with p2pfl's own trainer, then compresses the trained
weights per tensor with ``quant:2^-s`` followed by ``cabac``, ``bz2`` or ``lzma``
for each step 2^-s, decodes them into the model and measures its test accuracy.
Size is the coded message (every frame, headers included) as a percentage of
the float32 weights.  The seeds' table has this shape (VGG16: DeepCABAC 11.98 %
of the original size against bzip2's 15.52 %, at the original accuracy).
Writes benchmarks/results/deepcabac/table.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl.compression import make_codec, wire_size  # noqa: E402
from p2pfl.data import load_dataset  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.models import assign_params, build_model, flatten_params  # noqa: E402
from p2pfl.training import LocalTrainer, SGDConfig, evaluate  # noqa: E402

CODERS = ("cabac", "bz2", "lzma")


def train(dataset: str, epochs: int):
    ds = load_dataset(dataset, seed=0)
    model = build_model("cnn", ds.input_shape, ds.num_classes, seed=0)
    cfg = SGDConfig(lr=0.05, momentum=0.9, batch_size=32, local_steps=0, local_epochs=epochs)
    LocalTrainer(model, ds.x_train, ds.y_train, cfg, seed=0).train()
    return model, ds


def table(dataset: str, epochs: int, steps: list) -> list:
    model, ds = train(dataset, epochs)
    flat = flatten_params(model)
    shapes = [tuple(p.shape) for p in model.parameters()]
    _, base = evaluate(model, ds.x_test, ds.y_test)
    rows = [{"dataset": dataset, "coder": "float32", "step": None, "size_pct": 100.0,
             "accuracy": base, "params": flat.numel()}]
    print(f"{dataset}: {flat.numel()} parameters, float32 accuracy {base:.4f}", flush=True)
    for s in steps:
        for coder in CODERS:
            codec = make_codec(f"quant:{2.0 ** -s!r}+{coder}", shapes=shapes)
            frames = codec.encode(flat)
            assign_params(model, codec.decode(frames))
            _, acc = evaluate(model, ds.x_test, ds.y_test)
            pct = 100.0 * wire_size(frames) / (4 * flat.numel())
            rows.append({"dataset": dataset, "coder": coder, "step": f"2^-{s}",
                         "size_pct": pct, "accuracy": acc, "params": flat.numel()})
            print(f"  step 2^-{s} {coder:5s} {pct:6.2f} %  acc {acc:.4f}", flush=True)
    assign_params(model, flat)
    return rows


def _md(rows: list) -> str:
    lines = ["| model | step | CABAC size % | bz2 size % | lzma size % | accuracy |",
             "|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault((r["dataset"], r["step"]), {})[r["coder"]] = r
    for (data, step), group in by.items():
        if step is None:
            lines.append(f"| {data} CNN | float32 | 100 | 100 | 100 | "
                         f"{group['float32']['accuracy']:.4f} |")
            continue
        acc = {round(group[c]["accuracy"], 4) for c in CODERS}  # same levels, same model
        lines.append(f"| {data} CNN | {step} | " + " | ".join(
            f"{group[c]['size_pct']:.2f}" for c in CODERS) + f" | {min(acc):.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 5, 6, 7, 8, 9])
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = table("digits", args.epochs, args.steps) + table("mnist1d", args.epochs, args.steps)
    out = os.path.join(ROOT, "benchmarks", "results", "deepcabac")
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, "table.json"), {"epochs": args.epochs, "rows": rows})
    text = _md(rows)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
