"""Filter-wise scaling in server-mode STC at p = 0.01 (issue 11, seed 003).

    python benchmarks/filter_scaling.py [--rounds 60] [--seeds 0 1 2 3] [--dataset digits]
                                        [--partition iid] [--model cnn]
                                        [--weight-decay 0] [--finetune]

Server STC on digits as 8x8 images with the 2-D CNN (9,930 parameters, two conv
layers of 16 and 32 filters), 10 workers, p = 0.01 up and down: without and with
``--filter-scaling on`` (48 four-bit scales and two float16 steps per update,
trained for 5 steps), and without it at larger p, to compare at equal bytes.
``--dataset mnist1d`` runs the 1-D CNN on mnist1d instead.  Accuracy is the
global model's at the last round, and "over rounds" its mean over every round
evaluated (how fast a run learns, not only where it ends); bytes are
summary.json's bytes_up_total and bytes_down_total.  All are averaged over the
seeds.  ``--partition`` splits the data otherwise (``dirichlet:0.3``: label
skew).  ``--model cnn:C1-C2`` widens the convolutions (``cnn:64-128``: 64 and
128 filters, 94,986 parameters; the scales' share of an update falls with the
filters' fan-in).  ``--weight-decay L`` trains with L2 decay: its shrinkage of
every weight is a dense per-filter change that one scale a filter carries and a
1 % sparse update does not.  ``--finetune`` is the paper's own setting, a pretrained
network adapted to a new domain: the CNN is first trained centrally on digits, and the
federated runs adapt it to the same digits turned 90 degrees.  Writes
benchmarks/results/filter_scaling.{json,md} (digits, iid, cnn, no decay), with
``_mnist1d``, ``_<partition>``, ``_<model>`` (``:`` as ``-``), ``_wd-<L>`` and
``_finetune`` added to the name otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl import run_cluster  # noqa: E402
from p2pfl.atomic import write_atomic  # noqa: E402
from p2pfl.metrics import write_json_atomic  # noqa: E402

RUNS = [("stc p=0.01", "stc:0.01+golomb", "off"),
        ("stc p=0.01 + filter scaling", "stc:0.01+golomb", "on"),
        ("stc p=0.011", "stc:0.011+golomb", "off"),
        ("stc p=0.012", "stc:0.012+golomb", "off"),
        ("stc p=0.015", "stc:0.015+golomb", "off")]


def _write_idx(folder: str, stem: str, x, y) -> None:
    """Images (n, 8, 8) of 0..16 and labels as MNIST-format IDX files (unsigned bytes)."""
    import numpy as np

    pixels = np.clip(np.rint(x * 15), 0, 255).astype(">u1")
    with open(os.path.join(folder, f"{stem}-images-idx3-ubyte"), "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + np.array(pixels.shape, ">u4").tobytes()
                 + pixels.tobytes())
    with open(os.path.join(folder, f"{stem}-labels-idx1-ubyte"), "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + np.array([len(y)], ">u4").tobytes()
                 + y.astype(">u1").tobytes())


def _finetune_task(tmp: str, model: str, seed: int = 0):
    """A pretrained CNN and a new domain, the paper's fine-tuning setting: the CNN is
    trained centrally on digits (8x8, written as MNIST files: ``source``), and the
    federated run adapts it to the same digits turned 90 degrees (``target``).
    Returns (the pretrained module, the target's dataset spec)."""
    import numpy as np
    import torch

    from p2pfl.data import load_dataset
    from p2pfl.models import build_model

    digits = load_dataset("digits", seed=seed)
    for name, turn in (("source", 0), ("target", 1)):
        folder = os.path.join(tmp, name)
        os.makedirs(folder, exist_ok=True)
        for stem, x, y in (("train", digits.x_train, digits.y_train),
                           ("t10k", digits.x_test, digits.y_test)):
            _write_idx(folder, stem, np.rot90(x[:, 0] * 16, turn, axes=(1, 2)), y)
    source = load_dataset("mnist:" + os.path.join(tmp, "source"))
    target = load_dataset("mnist:" + os.path.join(tmp, "target"))
    net = build_model(model, source.input_shape, 10, seed=seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.as_tensor(source.x_train), torch.as_tensor(source.y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):  # epochs
        for batch in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        for name, ds in (("source", source), ("target", target)):
            acc = (net(torch.as_tensor(ds.x_test)).argmax(1).numpy() == ds.y_test).mean()
            print(f"pretrained CNN, {name} test accuracy {acc:.4f}", flush=True)
    return net, "mnist:" + os.path.join(tmp, "target")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--dataset", choices=["digits", "mnist1d"], default="digits")
    ap.add_argument("--partition", default="iid", help="iid, dirichlet:ALPHA, shards:S")
    ap.add_argument("--model", default="cnn", help="cnn or cnn:C1-C2[-...]")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    ap.add_argument("--finetune", action="store_true",
                    help="start from a CNN pretrained on digits; learn digits turned 90 deg")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset, model = args.dataset, args.model
        if args.finetune:
            model, dataset = _finetune_task(tmp, args.model)
        for name, spec, scaling in RUNS:
            accs, curves, up, down = [], [], [], []
            for seed in args.seeds:
                s = run_cluster(mode="stc", nodes=10, dataset=dataset, model=model,
                                rounds=args.rounds, compression=spec, filter_scaling=scaling,
                                seed=seed, partition=args.partition, quiet=True,
                                weight_decay=args.weight_decay,
                                in_process=True,
                                out=os.path.join(tmp, f"{len(rows)}-{seed}")).summary
                accs.append(s["global_accuracy_per_round"][-1][1])
                curve = [a for _, a in s["global_accuracy_per_round"]]
                curves.append(sum(curve) / len(curve))
                up.append(s["bytes_up_total"])
                down.append(s["bytes_down_total"])
            row = {"run": name, "codec": spec, "filter_scaling": scaling,
                   "accuracy": sum(accs) / len(accs), "accuracies": accs,
                   "accuracy_over_rounds": sum(curves) / len(curves),
                   "accuracies_over_rounds": curves,
                   "bytes_up": sum(up) / len(up), "bytes_down": sum(down) / len(down)}
            rows.append(row)
            print(f"{name:30s} acc {row['accuracy']:.4f}  over rounds "
                  f"{row['accuracy_over_rounds']:.4f}  up {row['bytes_up'] / 1e3:8.1f} kB  "
                  f"down {row['bytes_down'] / 1e3:8.1f} kB", flush=True)
    lines = ["| run | accuracy | over rounds | kB up | kB down |", "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['accuracy']:.4f} | {r['accuracy_over_rounds']:.4f} | "
              f"{r['bytes_up'] / 1e3:.1f} | "
              f"{r['bytes_down'] / 1e3:.1f} |" for r in rows]
    out = os.path.join(ROOT, "benchmarks", "results")
    name = "filter_scaling" + ("" if args.dataset == "digits" else "_" + args.dataset)
    name += "" if args.partition == "iid" else "_" + args.partition.replace(":", "-")
    name += "" if args.model == "cnn" else "_" + args.model.replace(":", "-")
    name += f"_wd-{args.weight_decay:g}" if args.weight_decay else ""
    name += "_finetune" if args.finetune else ""
    write_json_atomic(os.path.join(out, name + ".json"), {
        "dataset": args.dataset, "partition": args.partition, "model": args.model,
        "weight_decay": args.weight_decay, "finetune": args.finetune, "rounds": args.rounds,
        "seeds": args.seeds, "rows": rows})
    write_atomic(os.path.join(out, name + ".md"),
                 lambda fh: fh.write("\n".join(lines) + "\n"), text=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
