"""Memory of the run's key tables in a host process of secure actors.

    python benchmarks/key_tables.py [--nodes 1024 4096]

For N nodes, builds N CURVE setups (``Security``) the way a host of N actors holds
them: each with a table of every key of the run (as before ``Security.sharing``), and
each sharing one table.  Prints the memory tracemalloc traces for each way, and writes
benchmarks/results/key_tables.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.transport.security import KeyPair, Security  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def traced(build) -> float:
    """MiB held by what ``build()`` returns, while it is alive."""
    tracemalloc.start()
    try:
        kept = build()
        size = tracemalloc.get_traced_memory()[0]
        del kept
        return size / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1024, 4096])
    args = ap.parse_args()
    rows = []
    for n in args.nodes:
        pairs = [KeyPair.generate() for _ in range(n)]
        public = {i: p.public for i, p in enumerate(pairs)}
        own = traced(lambda: [Security(p, public) for p in pairs])
        run = Security(pairs[0], public)
        shared = traced(lambda: [run.sharing(p) for p in pairs])
        print(f"  {n} actors: {own:,.1f} MiB with a table each, {shared:,.2f} MiB sharing one")
        rows.append({"actors": n, "mib_a_table_each": round(own, 2),
                     "mib_sharing_one": round(shared, 2)})
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "key_tables.json"), rows)


if __name__ == "__main__":
    main()
