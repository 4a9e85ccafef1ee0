"""Compare how fast gossip converges on different topologies of 16 nodes.

    python examples/compare_topologies.py

Sparse graphs (small spectral gap) mix slowly: the consensus distance stays
larger and non-iid data hurts them more.  ``one_peer_exponential:16`` changes peers
every round, sending one model a node a round: its gap, 1.0, is per round over one
period of 4 rounds, which averages exactly, but within a period a node has heard only
some of the others, so in 15 rounds it may trail graphs of a smaller gap.  Writes a PNG
of accuracy per round.
"""

import p2pfl
from p2pfl.plot import plot_curves

SPECS = ["ring:16", "torus:4x4", "exponential:16", "random_regular:4:16", "complete:16",
         "one_peer_exponential:16"]


def main() -> None:
    series = {}
    for spec in SPECS:
        res = p2pfl.run_cluster(spec, rounds=15, partition="dirichlet:0.3", in_process=True,
                                quiet=True, out=f"runs/example-topologies/{spec.replace(':', '-')}")
        s = res.summary
        series[f"{spec} (gap {s['spectral_gap']:.2f})"] = tuple(zip(*s["accuracy_per_round"]))
        consensus = (s.get("consensus_last") or {}).get("rel_median")
        spread = f"{consensus:.3f}" if consensus is not None else "  -  "
        print(f"{spec:24s} gap {s['spectral_gap']:.3f}  accuracy {s['accuracy_mean']:.3f}  "
              f"relative consensus distance {spread}  {s['bytes_sent_total'] / 1e6:6.1f} MB")
    path = plot_curves(series, "runs/example-topologies/accuracy.png", "round", "mean accuracy")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
