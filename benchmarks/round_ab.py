"""Small-model round cost of two source trees, alternated in the same run (issue 10).

    python benchmarks/round_ab.py --tree OLD [--tree NEW] [--pairs 3] [--rounds 4000]
                                  [--model mlp:135]

Runs ``p2pfl cluster --topology ring:8 --dataset digits --model mlp:135 --local-steps 0
--no-consensus`` (exchange only; ``--model`` sets the size: ``mlp:135`` has 10,135 parameters, the
transport benchmark's 10 K case, ``mlp:13500`` its 1 M case)
from each tree in turn (``PYTHONPATH`` set to the tree; the C extensions must be built
in it, or copied in), ``--pairs`` times, and prints for each run:

* **wall a round**: from the nodes' own clocks, the last record's round time minus
  that of round ``rounds // 8`` (start-up and the first rounds left out), per round;
* **node CPU a round**: each node's ``process_cpu_s`` (every thread) over the same
  rounds, the mean over the 8 nodes;
* **whole-run CPU a round**: user and system CPU of the launcher and every node
  process, start-up included (``RUSAGE_CHILDREN`` around the run), per round.

The trees default to this checkout for ``NEW``.  Medians per tree go to
``benchmarks/results/round_ab.json`` (``round_ab_mlp_13500.json`` and so on for another
model).  The machine's speed drifts between sessions and within one, so only the
alternated pairs compare; the figures are not comparable with another run's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _results import commit_of, round_span  # noqa: E402
from p2pfl.metrics import read_metrics, write_json_atomic  # noqa: E402


def _children_cpu() -> float:
    """User and system CPU seconds of every child process waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def one_run(tree: str, rounds: int, tmp: str, model: str = "mlp:135") -> dict:
    """One exchange-only ring of 8 from ``tree``: its per-round figures."""
    out = os.path.join(tmp, "run")
    env = dict(os.environ, PYTHONPATH=tree)
    cpu0 = _children_cpu()
    subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "--topology", "ring:8",
                    "--dataset", "digits", "--model", model, "--local-steps", "0",
                    "--rounds", str(rounds), "--no-consensus", "-q", "--out", out],
                   cwd=tree, env=env, check=True)
    total_cpu = _children_cpu() - cpu0
    recs = read_metrics(os.path.join(out, "metrics.jsonl"))
    first = rounds // 8
    elapsed, cpu = round_span(recs, first, rounds)
    span = rounds - first
    return {"wall_ms_per_round": 1e3 * elapsed / span,
            "node_cpu_us_per_round": 1e6 * statistics.mean(cpu.values()) / span,
            "run_cpu_us_per_round": 1e6 * total_cpu / rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True,
                    help="a source tree (give it once for OLD, and again for NEW)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4000)
    ap.add_argument("--model", default="mlp:135")
    args = ap.parse_args()
    trees = [os.path.abspath(t) for t in args.tree] + ([ROOT] if len(args.tree) == 1 else [])
    if len(trees) != 2 or args.pairs < 1 or args.rounds < 16:
        ap.error("give one or two --tree, --pairs of at least 1, --rounds of at least 16")
    runs: dict = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="p2pfl-round-ab-") as tmp:
        for pair in range(args.pairs):
            for tree in trees:
                r = one_run(tree, args.rounds, tmp, args.model)
                runs[tree].append(r)
                print(f"  pair {pair + 1}, {tree}: wall {r['wall_ms_per_round']:.3f} ms a "
                      f"round, node CPU {r['node_cpu_us_per_round']:.1f} µs a round, whole "
                      f"run {r['run_cpu_us_per_round']:.1f} µs of CPU a round", flush=True)
    medians = {t: {k: statistics.median(r[k] for r in v) for k in v[0]} for t, v in runs.items()}
    old, new = (medians[t] for t in trees)
    print("medians, " + " -> ".join(commit_of(t, dirty=True) for t in trees) + ":")
    for key in old:
        print(f"{key}: {old[key]:.3f} -> {new[key]:.3f} ({100 * (new[key] / old[key] - 1):+.1f} %)")
    name = "round_ab" + ("" if args.model == "mlp:135" else "_" + args.model.replace(":", "_"))
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", name + ".json"),
                      {"trees": trees, "commits": [commit_of(t, dirty=True) for t in trees],
                       "model": args.model, "rounds": args.rounds, "pairs": args.pairs,
                       "runs": runs, "median": medians})


if __name__ == "__main__":
    main()
