"""The Python API as a demanding script or notebook uses it: arguments of the wrong type,
callbacks that raise what no ``except Exception`` catches, a graph object next to a
config file, reading a run's models back."""

from __future__ import annotations

import os

import networkx as nx
import pytest

import p2pfl
from p2pfl.errors import ConfigError


@pytest.mark.parametrize("config", [{"rounds": 2}, 3.5, b"run.toml", "pipe"])
def test_a_config_that_is_not_a_path_is_refused_and_no_descriptor_is_touched(config):
    """An int was opened as a file descriptor: read, then closed (config=True closed the
    caller's stdout); a dict raised a bare TypeError."""
    r, w = os.pipe()
    os.write(w, b"rounds = 2\n")
    os.close(w)
    try:
        with pytest.raises(ConfigError, match="config must be the path of a TOML file"):
            p2pfl.plan_cluster("ring:3", config=r if config == "pipe" else config, quiet=True)
        os.fstat(r)  # still open
        assert os.read(r, 100) == b"rounds = 2\n"  # and not read
    finally:
        os.close(r)


def test_a_graph_object_overrides_a_config_files_topology_and_nodes(tmp_path):
    """Keywords override the file, and a topology string did; a graph object did not:
    res.config and config.json's sources kept the file's ring:5 for a run over the
    graph (res.config said ring:8, the default, without a file), and a server run's
    file nodes= was refused next to the graph."""
    gossip = tmp_path / "gossip.toml"
    gossip.write_text('topology = "ring:5"\nrounds = 2\n')
    p = p2pfl.plan_cluster(nx.cycle_graph(3), config=gossip, quiet=True)
    assert len(p.specs) == 3 and p.config.rounds == 2
    assert p.config.topology == "networkx Graph (3 nodes)"
    assert p.record["sources"]["file"] == ["rounds"]
    assert p.record["topology"] == "networkx Graph (3 nodes)"
    server = tmp_path / "server.toml"
    server.write_text('mode = "fedavg"\nnodes = 3\n')
    p = p2pfl.plan_cluster(nx.cycle_graph(4), config=server, quiet=True)
    assert sum(s.role == "worker" for s in p.specs) == 4
    assert p.config.topology == "networkx Graph (4 nodes)" and p.config.nodes is None
    with pytest.raises(ConfigError, match="give one of them"):  # both given as keywords
        p2pfl.plan_cluster(nx.cycle_graph(4), mode="fedavg", nodes=3, quiet=True)
