"""Temporal CABAC contexts on server-mode updates (STC, compressed FedAvg): the
acknowledgement that keeps each worker's chain in step with the server, lost updates,
and the plan's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _remote import cluster_summary
from _strategy_ctx import client as make_test_client
from _strategy_ctx import FakeLearner, server_ctx
from p2pfl.compression.temporal import TemporalGap
from p2pfl.strategies import make_strategy
from tests._inproc import cli_here

N = 400
SPEC = "topk:0.05+quant:0.002+cabac:temporal"
TEMPORAL = dict(compression=SPEC, compression_down="auto", error_feedback="off")


def _round(server, client, rnd: int, delta: torch.Tensor, worker: int = 0):
    """One round for one worker: instruction, local 'training', reply (round stamped
    as the receiver stamps it from the header)."""
    client.apply(rnd, server.configure(rnd, [worker])[worker])
    client.learner.set_flat(client.base + delta)
    packet = client.reply(rnd)
    packet.round = rnd
    return packet


def _deltas(rounds: int, seed: int = 0):
    """Consecutive updates that share most of their large entries."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(N).astype(np.float32)
    for _ in range(rounds):
        yield torch.from_numpy(x * 0.05)
        x = 0.9 * x + 0.3 * rng.standard_normal(N).astype(np.float32)


def _aggregate(server, rnd, worker, content):
    from p2pfl.strategies import Reply

    server.aggregate(rnd, [Reply(worker, content=content)])


def test_the_automatic_downstream_codes_with_plain_contexts():
    server = make_strategy("stc", server_ctx("stc", n=N, **TEMPORAL))
    assert server.up_spec == SPEC and server.down_spec == "topk:0.05+quant:0.002+cabac"
    assert server.up.temporal
    assert "ack" in server.configure(1, [0])[0].meta
    plain = make_strategy("stc", server_ctx("stc", n=N))
    assert "ack" not in plain.configure(1, [0])[0].meta  # no field without temporal


def test_a_lost_update_restarts_the_workers_chain():
    server = make_strategy("stc", server_ctx("stc", n=N, **TEMPORAL))
    client = make_test_client("stc", FakeLearner(N), **TEMPORAL)
    deltas = list(_deltas(5))
    for rnd in (1, 2):  # the chain runs: each update decodes against the last
        got = server.decode(0, _round(server, client, rnd, deltas[rnd - 1]))
        _aggregate(server, rnd, 0, got)
        assert server.up.heard[0] == rnd
    _round(server, client, 3, deltas[2])  # late or lost: the server never decodes it
    _aggregate(server, 3, 0, torch.zeros(N))
    packet = _round(server, client, 4, deltas[3])  # ack 2, ours 3: plain contexts
    got = server.decode(0, packet)
    assert server.up.heard[0] == 4 and got.abs().sum() > 0
    _aggregate(server, 4, 0, got)
    server.decode(0, _round(server, client, 5, deltas[4]))  # and the chain runs again


def test_without_the_acknowledgement_a_lost_update_is_a_gap():
    server = make_strategy("stc", server_ctx("stc", n=N, **TEMPORAL))
    client = make_test_client("stc", FakeLearner(N), **TEMPORAL)
    deltas = list(_deltas(3))
    server.decode(0, _round(server, client, 1, deltas[0]))
    _round(server, client, 2, deltas[1])  # lost
    instruction = server.configure(3, [0])[0]
    instruction.meta["ack"] = 2  # a forged acknowledgement: the worker keeps its chain
    client.apply(3, instruction)
    client.learner.set_flat(client.base + deltas[2])
    packet = client.reply(3)
    packet.round = 3
    with pytest.raises(TemporalGap):
        server.decode(0, packet)


@pytest.mark.parametrize("ack", [None, "2", -1, 1 << 70, [1]])
def test_a_hostile_acknowledgement_only_restarts_the_chain(ack):
    server = make_strategy("stc", server_ctx("stc", n=N, **TEMPORAL))
    client = make_test_client("stc", FakeLearner(N), **TEMPORAL)
    deltas = list(_deltas(2))
    server.decode(0, _round(server, client, 1, deltas[0]))
    instruction = server.configure(2, [0])[0]
    instruction.meta["ack"] = ack
    client.apply(2, instruction)
    client.learner.set_flat(client.base + deltas[1])
    packet = client.reply(2)
    packet.round = 2
    server.decode(0, packet)  # plain contexts: decodable whatever the server holds


@pytest.mark.parametrize("flags, message", [
    (["--compression-down", SPEC], "downstream"),
    (["--mode", "cfd"], "mode cfd sends its soft labels uncompressed"),
    (["--mode", "cfl"], "mode cfl sends its updates uncompressed"),
    (["--mode", "fedavg", "--compression-down", "stc:0.01"], "applies to --mode stc"),
    (["--mode", "cfl", "--compression", "none", "--filter-scaling", "on"], "stc and fedavg"),
    (["--mode", "fedavg", "--compression", "none", "--filter-scaling", "on"], "give fedavg"),
])
def test_codecs_where_they_do_not_apply_are_usage_errors(tmp_path, flags, message):
    out = tmp_path / "bad"
    proc = cli_here("cluster", "--mode", "stc", "--topology", "ring:6", "-q", "--out", str(out),
                    "--compression", SPEC, *flags)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("mode", ["stc", "fedavg"])
def test_temporal_contexts_in_server_modes_are_lossless_and_smaller(tmp_path, mode):
    runs = {}
    for name, spec in (("plain", SPEC.replace(":temporal", "")), ("temporal", SPEC)):
        runs[name] = cluster_summary(tmp_path / name, "--topology", "ring:6", "--rounds", "12",
                                     "--error-feedback", "off", "--compression", spec,
                                     "--mode", mode)
    plain, temporal = runs["plain"], runs["temporal"]
    # the same levels reach the server: the runs learn identically, on fewer bytes
    assert temporal["accuracy_per_round"] == plain["accuracy_per_round"]
    assert temporal["bytes_sent_total"] < plain["bytes_sent_total"]
    assert temporal["dropped"].get("temporal_gap", 0) == 0
