"""Run a gossip cluster from Python over a networkx graph and read the results.

    python examples/quickstart.py
"""

import networkx as nx

import p2pfl


def main() -> None:
    graph = nx.connected_watts_strogatz_graph(10, 4, 0.2, seed=1)
    result = p2pfl.run_cluster(graph, dataset="digits", rounds=20, out="runs/example-quickstart")
    s = result.summary
    print(f"{s['nodes']} nodes, spectral gap {s['spectral_gap']:.3f}: "
          f"mean accuracy {s['accuracy_mean']:.3f}, {s['bytes_sent_total'] / 1e6:.1f} MB sent")
    last = [r for r in result.metrics if r["round"] == s["rounds"]]
    for r in last:
        print(f"  node {r['label']}: accuracy {r['accuracy']:.3f}, "
              f"distance to the mean {r['consensus_distance']:.4f}")


if __name__ == "__main__":
    main()
