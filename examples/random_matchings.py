"""Randomised pairwise gossip as a schedule file: a random matching of a graph each round.

    python examples/random_matchings.py [--topology torus:4x4] [--rounds 100]

Writes ``runs/example-matchings/schedule.json`` for ``--topology one_peer:FILE``: one
phase a round, in which the edges of a random maximal matching of the graph pair their
ends (each hears, and sends to, the other; a node left unmatched idles that round), then
runs it against the static graph and prints the accuracy and the megabytes each sent.
The pairs change every round, so over the rounds the models still mix across the whole
graph, with one model a node a round at most.
"""

import argparse
import json
import os

import numpy as np

import p2pfl
from p2pfl.topology import build


def matchings(graph, rounds: int, seed: int) -> list:
    """``rounds`` lists of sources: ``sources[i]`` is i's partner, or i when unmatched."""
    rng = np.random.default_rng(seed)
    edges = np.array(list(graph.edges()))
    phases = []
    for _ in range(rounds):
        sources = list(range(graph.number_of_nodes()))
        for u, v in edges[rng.permutation(len(edges))].tolist():  # greedy, in random order
            if sources[u] == u and sources[v] == v:
                sources[u], sources[v] = v, u
        phases.append(sources)
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default="torus:4x4")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = "runs/example-matchings"
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "schedule.json")
    with open(path, "w") as fh:
        json.dump({"sources": matchings(build(args.topology).graph, args.rounds, args.seed)}, fh)
    specs = (args.topology, f"one_peer:{path}")
    width = max(len(spec) for spec in specs)  # the path is longer than 40 characters
    for spec in specs:
        res = p2pfl.run_cluster(spec, dataset="digits", rounds=args.rounds, in_process=True,
                                quiet=True, out=os.path.join(out, "one_peer" if spec.startswith(
                                    "one_peer:") else "static"))  # a path may be absolute
        s = res.summary
        print(f"{spec:{width}s}  accuracy {s['accuracy_mean']:.4f}  "
              f"{s['bytes_sent_total'] / 1e6:7.2f} MB sent  gap per round {s['spectral_gap']:.3f}")


if __name__ == "__main__":
    main()
