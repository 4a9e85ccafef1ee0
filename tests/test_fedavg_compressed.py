"""FedAvg with compressed updates (``--mode fedavg --compression SPEC``; strategies/upstream.py)."""

from __future__ import annotations

import torch

from _remote import cluster_summary
from _strategy_ctx import client as make_test_client
from _strategy_ctx import FakeLearner, server_ctx
from p2pfl.compression import make_codec
from p2pfl.strategies import make_strategy

N = 400
SPEC = "topk:0.05+quant:0.002+cabac:temporal"


def test_the_server_reads_what_the_worker_coded_and_acknowledges_each_worker():
    kw = dict(compression=SPEC, error_feedback="off")
    server = make_strategy("fedavg", server_ctx("fedavg", n=N, **kw))
    client = make_test_client("fedavg", FakeLearner(N), **kw)
    packets = server.configure(1, [0, 1])
    assert packets[0].meta == {"ack": 0} and packets[0] is not packets[1]
    assert packets[0].frames is packets[1].frames  # one model, sent as is to both
    client.apply(1, packets[0])
    delta = torch.linspace(-1, 1, N)
    client.learner.set_flat(client.base + delta)
    reply = client.reply(1)
    reply.round = 1
    assert reply.codec == make_codec(SPEC).name and reply.meta["n"] == 10
    got = server.decode(0, reply)
    plain = make_codec(SPEC.replace(":temporal", ""))
    _, expected = plain.encode_with_reconstruction(delta)  # top 5 %, quantised
    torch.testing.assert_close(got, expected)
    assert server.configure(2, [0])[0].meta == {"ack": 1}


def test_without_a_codec_fedavg_sends_raw_float32_as_before():
    server = make_strategy("fedavg", server_ctx("fedavg", n=N))
    client = make_test_client("fedavg", FakeLearner(N))
    assert server.up is None and client.up is None
    packet = server.configure(1, [0])[0]
    assert packet.codec == "none" and packet.meta == {}
    client.apply(1, packet)
    assert client.reply(1).codec == "none"


def _run(tmp_path, name, *flags):
    return cluster_summary(tmp_path / name, "--mode", "fedavg", "--nodes", 6, "--rounds", 12,
                           *flags)


def test_compressed_fedavg_sends_fewer_bytes_up_and_learns(tmp_path):
    dense = _run(tmp_path, "dense")
    sparse = _run(tmp_path, "sparse", "--compression", "topk:0.05+quant:0.002+cabac")
    assert sparse["compression"] == "topk:0.05+quant:0.002+cabac"
    assert sparse["bytes_up_total"] < 0.2 * dense["bytes_up_total"]
    assert sparse["bytes_down_total"] == dense["bytes_down_total"]  # the model goes raw
    assert sparse["accuracy_mean"] > 0.8 and sparse["dropped_total"] == 0
