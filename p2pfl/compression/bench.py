"""``p2pfl bench codecs``: rate, distortion and speed of codecs on standard tensors.

Standard tensors (built once, seeded):

* ``weights``: the flat parameters of a 64-256-256-10 MLP trained ~1 s on the
  scikit-learn digits (a Laplacian(0.02) vector of the same size without sklearn);
* ``update``: one round's update, the change of those weights over 20 SGD steps;
* ``matrix``: the same update of the 256×256 hidden layer alone, kept 2-D (the
  flat vectors above are sent dense by ``powersgd``, which needs a matrix);
* ``gauss``: 10^6 i.i.d. N(0, 1) entries.

Per codec and tensor: bits per parameter (exact wire size), relative L2 error
‖C(x) − x‖/‖x‖, encode and decode speed in MB of float32 input per second
(best of 3), and, for codecs that send integer levels, ``vs_entropy``: coded
bits over n·H₀, the zeroth-order empirical entropy of the dense level array
(what an ideal memoryless coder of those levels would need).
"""
from __future__ import annotations

import json as _json
import time

import numpy as np
import torch

from . import make_codec, wire_size
from .errors import CodecError
from .intermediate import Levels

__all__ = ["DEFAULT_SPECS", "standard_tensors", "run_codec_bench", "format_codec_bench",
           "print_codec_bench"]

DEFAULT_SPECS = (
    "none", "fp16", "bf16", "quant:0.0039", "quant:0.0039+deflate", "quant:0.0039+bz2",
    "quant:0.0039+lzma", "quant:0.0039+cabac", "dq:0.0039+cabac", "uniform:8+lzma", "qsgd:16",
    "terngrad", "sign",
    "topk:0.01", "topk:0.01+golomb", "topk:0.01+golomb+deflate", "topk:0.01+quant:0.001+cabac",
    "randk:0.01", "threshold:0.001", "sbc:0.01+golomb", "stc:0.01+golomb", "stc:0.01+cabac",
    "powersgd:2",
)


def _digits_mlp_weights(seed: int = 0, steps: int = 200):
    from sklearn.datasets import load_digits  # optional dependency (extra "data")
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(seed)

    def train(n):
        for _ in range(n):
            idx = torch.randint(0, len(y), (64,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])

    before = train(steps)
    hidden = model[2].weight.detach().clone()
    after = train(20)
    return after, after - before, model[2].weight.detach() - hidden


def standard_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """The bench tensors: trained weights, one round's update, a Gaussian vector."""
    g = torch.Generator().manual_seed(seed)
    try:
        weights, update, matrix = _digits_mlp_weights(seed)
    except ImportError:
        lap = torch.distributions.Laplace(0.0, 0.02)
        weights, update = lap.sample((85_002,)), lap.sample((85_002,)) * 0.05
        matrix = lap.sample((256, 256)) * 0.05
    return {"weights": weights, "update": update, "matrix": matrix,
            "gauss": torch.randn(1_000_000, generator=g)}


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _entropy_bits(levels: np.ndarray) -> float:
    if levels.size == 0:
        return 0.0
    _, counts = np.unique(levels, return_counts=True)
    c = counts.astype(np.float64)
    return float(-(c * np.log2(c / levels.size)).sum())


def _level_entropy(codec, x: torch.Tensor) -> float | None:
    """n·H₀ of the dense levels this codec would send for x (None for float codecs)."""
    # a measurement encodes: a chained stage (powersgd:R:alternate) moves its chain on
    inter = codec.intermediate(x.reshape(-1).numpy().copy(), tuple(x.shape))
    if not isinstance(inter.values, Levels) or inter.rank:
        return None
    levels = inter.values.levels
    if inter.positions is not None:
        dense = np.zeros(inter.numel, dtype=np.int64)
        dense[inter.positions] = levels
        levels = dense
    return _entropy_bits(levels)


def bench_one(spec: str, name: str, x: torch.Tensor, repeats: int = 3) -> dict:
    """One codec on one tensor.  Each timed encode is a fresh encoder's first message,
    decoded by a fresh decoder: a stateful codec (``cabac:temporal``,
    ``powersgd:R:alternate``) sends a chain's later messages against earlier ones,
    which a decoder must have seen."""
    def fresh():
        return make_codec(spec, error_feedback=False, seed=0)

    encoders, decoders = [fresh() for _ in range(repeats)], [fresh() for _ in range(repeats)]
    t_enc, frames = _best_of(lambda: encoders.pop().encode(x), repeats)
    t_dec, y = _best_of(lambda: decoders.pop().decode(frames), repeats)
    bits = 8 * wire_size(frames)
    mb = 4 * x.numel() / 1e6
    norm = float(x.double().norm())
    ent = _level_entropy(fresh(), x)
    return {
        "codec": spec, "tensor": name, "numel": x.numel(),
        "bits_per_param": bits / x.numel(),
        "rel_l2": float((y.double() - x.double()).norm()) / norm if norm else 0.0,
        "encode_MBps": mb / t_enc, "decode_MBps": mb / t_dec,
        "vs_entropy": bits / ent if ent else None,
        "entropy_bits_per_param": ent / x.numel() if ent is not None else None,
    }


def _bench_codec(spec: str, tensors: dict, repeats: int) -> list[dict]:
    """``spec`` on every tensor; a CodecError says which codec and tensor it was."""
    rows = []
    for name, x in tensors.items():
        try:
            rows.append(bench_one(spec, name, x, repeats))
        except CodecError as exc:
            raise CodecError(f"{spec} cannot encode the bench's {name!r} tensor: "
                             f"{exc}") from None
    return rows


def _nncodec_rows(tensors) -> list[dict]:
    """A reference row when the optional ``nncodec`` package is importable."""
    try:
        import nncodec  # noqa: F401  (optional; Fraunhofer's NNC implementation)
    except ImportError:
        return []
    return [{"codec": "nncodec", "tensor": name, "numel": x.numel(),
             "note": "nncodec is importable but not wired into this bench; see "
                     "ALGORITHMS.md for its reference figures"} for name, x in tensors.items()]


def run_codec_bench(specs=None, json: bool = False, tensors=None, repeats: int = 3,
                    out=print) -> list[dict]:
    """Bench ``specs`` (default DEFAULT_SPECS) on the standard tensors; prints a table,
    or one JSON object per line with ``json=True`` (``out=None`` prints nothing)."""
    torch.set_num_threads(1)
    tensors = tensors or standard_tensors()
    specs = specs or DEFAULT_SPECS
    rows = [row for spec in specs for row in _bench_codec(spec, tensors, repeats)]
    rows += _nncodec_rows(tensors)
    if out is not None:
        if json:
            for row in rows:
                out(_json.dumps(row))
        else:
            out(format_codec_bench(rows))
    return rows


def format_codec_bench(rows: list[dict]) -> str:
    head = (f"{'codec':30s} {'tensor':8s} {'numel':>8s} {'bits/par':>9s} {'rel.err':>8s} "
            f"{'enc MB/s':>9s} {'dec MB/s':>9s} {'vs H0':>6s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "note" in r:
            lines.append(f"{r['codec']:30s} {r['tensor']:8s} {r['numel']:8d}  {r['note']}")
            continue
        ratio = f"{r['vs_entropy']:6.3f}" if r["vs_entropy"] else "     -"
        lines.append(f"{r['codec']:30s} {r['tensor']:8s} {r['numel']:8d} "
                     f"{r['bits_per_param']:9.4f} {r['rel_l2']:8.4f} {r['encode_MBps']:9.1f} "
                     f"{r['decode_MBps']:9.1f} {ratio}")
    return "\n".join(lines)


def print_codec_bench(rows: list[dict]) -> None:
    print(format_codec_bench(rows))
