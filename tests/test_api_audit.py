"""The Python API as a demanding script or notebook uses it: arguments of the wrong type,
callbacks that raise what no ``except Exception`` catches, a graph object next to a
config file, reading a run's models back."""

from __future__ import annotations

import json
import os

import networkx as nx
import numpy as np
import pytest
import torch.nn as nn

import p2pfl
from p2pfl.api import execute
from p2pfl.errors import ConfigError, UsageError

FAST = dict(rounds=5, quiet=True, in_process=True, transport="inproc", dataset="digits")


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


class _NotAnException(BaseException):
    """As pytest.fail's and pytest.skip's outcomes, or a framework's cancellation."""


def test_on_round_raising_a_base_exception_still_leaves_a_summary(tmp_path):
    """Only Exception and SystemExit were the hook's: any other BaseException unwound
    the launcher, and the run ended with no summary.json."""

    def hook(rnd, records):
        raise _NotAnException("from the hook")

    with pytest.raises(_NotAnException, match="from the hook"):
        p2pfl.run_cluster("ring:3", out=str(tmp_path), on_round=hook, **FAST)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["on_round_error"] == "_NotAnException: from the hook"
    assert summary["stop_requested_at_round"] is None and not summary["interrupted"]


def test_a_saved_model_is_asked_for_by_a_nodes_integer_id(tmp_path):
    """model(1.9) and model("1") loaded node 1's file, model(True) too; model("b") raised
    a bare ValueError (int("b")), model(None) a TypeError."""
    graph = nx.relabel_nodes(nx.path_graph(3), {0: "a", 1: "b", 2: "c"})
    res = p2pfl.run_cluster(graph, out=str(tmp_path), save_models=True, **dict(FAST, rounds=1))
    assert res.model(1).training is False and res.model(np.int64(2)) is not None
    with pytest.raises(UsageError, match="an integer .*got 'b'; label 'b' is node 1"):
        res.model("b")
    for wrong in (1.9, "1", True, None):
        with pytest.raises(UsageError, match="node's id, an integer"):
            res.model(wrong)


def test_executing_a_plan_whose_module_was_not_kept_is_refused_before_any_node(tmp_path):
    """plan_cluster keeps no module of the caller's: execute(plan) started every node,
    and each failed with "unknown model 'custom:0'" (a ClusterError)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    p = p2pfl.plan_cluster("ring:3", model=net, out=str(tmp_path / "run"), **FAST)
    with pytest.raises(UsageError, match="a module of yours, which plan_cluster does not keep"):
        execute(p)
    assert not (tmp_path / "run").exists()


def test_numpys_booleans_are_accepted_as_numpys_numbers_are():
    """quiet=np.True_ (as numpy comparisons answer) was "must be true or false"."""
    p = p2pfl.plan_cluster("ring:3", quiet=np.True_, consensus=np.float64(1) > 2, rounds=1)
    assert p.config.quiet is True and p.config.consensus is False
    with pytest.raises(ConfigError, match="must be true or false"):  # an array is not one
        p2pfl.plan_cluster("ring:3", quiet=np.array([True]), rounds=1)


class _Asserts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        assert x.dim() == 2, "wants flat input"
        return self.fc(x)


class _Typo(_Asserts):
    def forward(self, x):
        return self.fc2(x.flatten(1))


@pytest.mark.parametrize("model, words", [
    (_Asserts(), "AssertionError: wants flat input"),
    (_Typo(), "AttributeError: '_Typo' object has no attribute 'fc2'"),
])
def test_a_module_failing_its_probe_in_any_way_is_a_config_error(tmp_path, model, words):
    """Only RuntimeError, TypeError, ValueError and IndexError were refused as a module
    that fails on the data: an assert or a typo in forward escaped the probe bare."""
    with pytest.raises(ConfigError, match=f"fails on a batch of .*{words}") as info:
        p2pfl.run_cluster("ring:3", model=model, out=str(tmp_path), **FAST)
    assert not os.listdir(tmp_path)
    assert info.value.__cause__ is not None  # the module's own error, for its traceback
