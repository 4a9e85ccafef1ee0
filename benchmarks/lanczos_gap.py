"""The spectral gap by Lanczos against the dense eigendecomposition, and their times.

    python benchmarks/lanczos_gap.py

For each graph, ``p2pfl.topology.spectrum._lanczos_gap`` (1,024 steps, rtol 1e-4) on
the sparse mixing matrix and ``numpy.linalg.eigvalsh`` on its dense form; prints
both gaps, their relative difference and the seconds of each, and writes the table
to benchmarks/results/lanczos_gap.json.  It also times the self-weights' row sums,
summed as over dense rows (``mixing._dense_row_sums``, O(n^2)), at 16,384 nodes.
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl import topology as tp  # noqa: E402
from p2pfl.atomic import write_json_atomic  # noqa: E402
from p2pfl.topology.mixing import _dense_row_sums  # noqa: E402

SPECS = ["torus:40x40", "torus:64x64", "torus:3x1000", "random_regular:4:3000:1",
         "small_world:3000:4:0.1:1", "erdos_renyi:2000:0.006:2", "barabasi_albert:3000:2:1",
         "exponential:2048", "star:3000", "line:400", "complete:50", "ring:3000",
         "line:3000"]


def main() -> None:
    rows = []
    for spec in SPECS:
        m = tp.build(spec).mixing
        t0 = time.perf_counter()
        lanczos = tp.spectrum._lanczos_gap(m, tp.spectrum.LANCZOS_STEPS, 1e-4)
        t1 = time.perf_counter()
        dense = tp.spectral_gap(m.toarray())
        t2 = time.perf_counter()
        rel = None if lanczos is None else abs(lanczos - dense) / dense
        rows.append({"spec": spec, "dense": dense, "lanczos": lanczos, "rel_diff": rel,
                     "lanczos_s": round(t1 - t0, 4), "dense_s": round(t2 - t1, 3)})
        print(f"{spec:26s} dense {dense:.7g} ({t2 - t1:.2f} s)  lanczos "
              f"{'not converged' if lanczos is None else f'{lanczos:.7g}'} "
              f"({t1 - t0:.3f} s)  rel. diff {'-' if rel is None else f'{rel:.1e}'}",
              flush=True)
    sums = {}
    for spec in ("torus:128x128", "random_regular:4:16384"):
        m = tp.build(spec).mixing
        sums[spec] = []
        for _ in range(3):
            t0 = time.perf_counter()
            _dense_row_sums(m.indptr, m.indices, m.data)
            sums[spec].append(round(time.perf_counter() - t0, 3))
        print(f"{spec:26s} self-weights' row sums {sums[spec]} s", flush=True)
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "lanczos_gap.json"),
                      {"gaps": rows, "row_sums_s": sums})


if __name__ == "__main__":
    main()
