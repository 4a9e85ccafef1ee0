"""Benchmark of the DeepCABAC-style level coder against general-purpose compressors.

Inputs (n levels each, fixed seeds):
  (a) Laplacian weights, scale 0.02, step 2^-8: levels = round(w / 2^-8);
  (b) a 1 % sparse update, step 2^-10, values N(0, sigma^2) at random positions,
      for sigma = 1e-3 ("std 1e-3") and sigma = sqrt(1e-3) ("variance 1e-3").

Prints bits/param of the coder, the zeroth-order empirical entropy H0, their
ratio, and encode/decode speed in MB/s of float32 input (4 * n bytes per second,
best of --repeat runs, one thread), then zlib / bz2 / lzma on the raw int8 (or
int16 when the levels do not fit) level array for comparison.

    python benchmarks/bench_cabac.py [--n 1000000] [--repeat 3] [--pure]
"""
import argparse
import bz2
import lzma
import os
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def best_time(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pure", action="store_true", help="force the pure-Python fallback")
    args = ap.parse_args(argv)
    if args.pure:
        os.environ["P2PFL_CABAC_PURE"] = "1"
    from p2pfl.compression import cabac
    from p2pfl.compression.reference import laplace_levels, sparse_levels

    n = args.n
    inputs = [
        ("(a) Laplace b=0.02, step 2^-8", laplace_levels(n)),
        ("(b) 1% sparse, std 1e-3, step 2^-10", sparse_levels(n, 1e-3)),
        ("(b') 1% sparse, var 1e-3, step 2^-10", sparse_levels(n, np.sqrt(1e-3))),
    ]
    mb = 4 * n / 1e6
    print(f"n = {n}, C core: {cabac.HAVE_C}, repeat = {args.repeat}\n")
    print("| input | CABAC bits/param | H0 bits/param | CABAC / H0 | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|---|")
    others = []
    for name, lv in inputs:
        te, data = best_time(lambda: cabac.encode_levels(lv), args.repeat)
        td, back = best_time(lambda: cabac.decode_levels(data, n), args.repeat)
        assert np.array_equal(back, lv), "round trip failed"
        bits = 8 * len(data) / n
        h0 = cabac.empirical_entropy_bits(lv) / n
        print(f"| {name} | {bits:.4f} | {h0:.4f} | {bits / h0:.4f} | {mb / te:.0f} | {mb / td:.0f} |")
        small = lv.astype(np.int8) if np.abs(lv).max() < 128 else lv.astype(np.int16)
        raw = small.tobytes()
        row = [name, small.dtype.name]
        for cname, comp in [
            ("zlib-9", lambda b: zlib.compress(b, 9)),
            ("bz2-9", lambda b: bz2.compress(b, 9)),
            ("lzma-6", lambda b: lzma.compress(b, preset=6)),
        ]:
            tc, c = best_time(lambda: comp(raw), 1)
            row.append(f"{8 * len(c) / n:.4f} ({mb / tc:.0f} MB/s)")
        others.append(row)
    print("\nGeneral-purpose compressors on the level array (bits/param, compress MB/s of float32 input):\n")
    print("| input | dtype | zlib -9 | bz2 -9 | lzma -6 |")
    print("|---|---|---|---|---|")
    for row in others:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
