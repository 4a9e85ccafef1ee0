"""CFD delta references stay consistent when a reply or an instruction is lost.

The server delta-codes the aggregate against the round a worker last said it
holds, and the worker delta-codes its soft labels against the round the server
last received from it.  A timed-out reply leaves the two sides' views apart
for a round; neither side may then reference something the other lacks.
"""

import numpy as np
import pytest
import torch
from torch import nn

from _strategy_ctx import client as fd_client
from _strategy_ctx import server_ctx
from p2pfl.strategies import Reply, make_strategy
from p2pfl.strategies.fd import FDClient, label_packet

SETTINGS = {"rounds": 20, "participation": 1.0, "seed": 0, "fd_bits": 1, "fd_delta": True,
            "dataset": "digits", "public_size": 50, "distill_steps": 1}
TIMEOUT = {"code": "timeout", "reason": "no softlabels"}


class FakeLearner:
    """A linear model on the 8x8 digits; each "training" redraws its weights, or with
    ``drift`` nudges them, so that few soft labels change from round to round."""

    num_samples, _node_id = 10, 0

    def __init__(self, drift: float = 0.0) -> None:
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.trainer = self
        self.distilled = 0
        self.drift = drift
        self.gen = torch.Generator().manual_seed(3)

    def drop_samples(self, idx) -> None:
        pass

    def distill(self, x, targets, steps) -> None:
        self.distilled += 1

    def train(self) -> float:
        with torch.no_grad():
            for p in self.model.parameters():
                noise = torch.randn(p.shape, generator=self.gen)
                p.copy_(p + self.drift * noise if self.drift else noise)
        return 0.0


def _pair(drift=0.0, **kw):
    s = dict(SETTINGS, **kw)
    server = make_strategy("cfd", server_ctx("cfd", workers=[0, 1], **s))
    return server, fd_client("cfd", FakeLearner(drift), **s)


def _other(server, rnd):
    """Worker 1: one-hot votes, drawn afresh each round unless the learner drifts."""
    votes = np.random.default_rng(rnd).integers(0, server.classes, server.m)
    return Reply(1, content=np.eye(server.classes, dtype=np.uint8)[votes], meta={"have": 0})


def _round(server, client, rnd, event, seen=None):
    """One round; ``event`` says what is lost between server and worker 0.  ``seen``
    collects the flag bytes of the frames both ways."""
    packets = server.configure(rnd, [0, 1])
    replies = [_other(server, 0 if client.learner.drift else rnd)]
    if event == "control_lost":  # the instruction never reaches the worker
        replies.append(Reply(0, error=TIMEOUT))
    else:
        client.apply(rnd, packets[0])
        if "agg" in packets[0].meta:  # the worker holds exactly what the server sent
            assert client.agg[0] == packets[0].meta["agg"]
            assert np.array_equal(client.agg[1], server.sent[client.agg[0]])
        client.fit()
        packet = client.reply(rnd)  # raises nothing, whatever was lost before
        if seen is not None:
            seen.update((way, p.frames[0][0]) for way, p in (("down", packets[0]),
                                                             ("up", packet)) if p.frames)
        if event == "reply_lost":  # sent, but late: the coordinator saw a timeout
            replies.append(Reply(0, error=TIMEOUT))
        else:
            replies.append(Reply(0, content=server.decode(0, packet), meta=dict(packet.meta)))
    server.aggregate(rnd, replies)
    return packets[0]


EVENTS = ["ok", "ok", "reply_lost", "ok", "reply_lost", "reply_lost", "ok", "control_lost",
          "ok", "control_lost", "reply_lost", "ok", "ok"]


@pytest.mark.parametrize("coder, bits, drift", [("packed", 1, 0.0), ("cabac", 2, 0.02),
                                               ("cabac:temporal", 2, 0.02)])
def test_worker_keeps_learning_after_lost_replies_and_instructions(coder, bits, drift):
    """With the CABAC coders, slowly drifting labels: the frames they pick include
    CABAC deltas, and temporal ones, both ways (every decode checks the reference)."""
    server, client = _pair(drift, fd_coder=coder, fd_bits=bits)
    refs, seen = [], set()
    for rnd, event in enumerate(EVENTS, start=1):
        packet = _round(server, client, rnd, event, seen)
        refs.append(packet.meta.get("ref", 0))
    flag = {"packed": 1, "cabac": 3, "cabac:temporal": 4}[coder]  # delta frames
    assert {("down", flag), ("up", flag)} <= seen, seen
    # deltas are against the last round the worker *confirmed* holding
    assert refs == [0, 0, 1, 1, 3, 3, 3, 6, 6, 8, 8, 8, 11]
    assert client.learner.distilled == sum(e != "control_lost" for e in EVENTS) - 1
    client.finish(server.finalize(0))
    assert np.array_equal(client.agg[1], server.sent[server.agg_round])


def test_upstream_delta_after_a_lost_reply_uses_what_the_server_holds():
    server, client = _pair()
    for rnd, event in enumerate(["ok", "ok", "reply_lost"], start=1):
        _round(server, client, rnd, event)
    assert server.held[0][0] == 2  # the round-3 labels never arrived
    packet = _round(server, client, 4, "ok")
    assert packet.meta["base"] == 2
    assert server.held[0][0] == 4  # the round-4 reply, delta against round 2, decoded


def test_a_delta_against_an_unknown_round_is_skipped_not_fatal():
    server, client = _pair()
    _round(server, client, 1, "ok")
    _round(server, client, 2, "ok")
    labels = server.sent[server.agg_round]
    stray = label_packet(labels, 1, labels, {"agg": 7, "ref": 6, "base": 0})
    client.apply(8, stray)  # round 6 was never held: nothing to decode against
    assert client.agg[0] == 1 and client.missed == 1
    assert client.reply(8).meta["have"] == 1  # so the server re-bases on what we hold


def test_full_aggregate_clears_the_need_for_references():
    server, client = _pair(fd_delta=False)
    for rnd, event in enumerate(["ok", "reply_lost", "ok"], start=1):
        packet = _round(server, client, rnd, event)
        assert packet.meta.get("ref", 0) == 0
    assert list(client.refs) == [client.agg[0]]


@pytest.mark.parametrize("event", ["reply_lost", "control_lost"])
def test_single_loss_then_recovery(event):
    server, client = _pair()
    for rnd, ev in enumerate(["ok", "ok", event, "ok", "ok"], start=1):
        _round(server, client, rnd, ev)
    assert server.client_has[0] == server.agg_round - 1 == 4
    assert client.agg[0] == 4 and np.array_equal(client.agg[1], server.sent[4])


def test_cfd_cluster_survives_a_late_reply(tmp_path, monkeypatch):
    """End to end: worker 0 answers round 3 after the coordinator's time-out."""
    import time

    from p2pfl import run_cluster

    timeout, reply = 1.5, FDClient.reply

    def late_once(self, rnd):
        if self.learner._node_id == 0 and rnd == 3:
            time.sleep(timeout + 1.0)  # the coordinator gives up on us, then moves on
        return reply(self, rnd)

    monkeypatch.setattr(FDClient, "reply", late_once)
    res = run_cluster(mode="cfd", nodes=4, rounds=6, dataset="digits", quiet=True,
                      in_process=True, round_timeout=timeout, out=str(tmp_path / "cfd"))
    coord = {r["round"]: r for r in res.metrics if r.get("role") == "coordinator"}
    assert [0, "timeout"] in coord[3]["failed"]
    assert res.summary["failed_nodes"] == {}
    served = [r["round"] for r in res.metrics
              if r.get("role") == "worker" and r.get("node") == 0]
    assert served == [1, 2, 3, 4, 5, 6]  # it kept learning after the lost reply
    assert all(coord[r]["replies_ok"] == 4 for r in (4, 5, 6))


@pytest.mark.parametrize("key, value", [("agg", float("inf")), ("agg", []), ("agg", None),
                                        ("ref", [1]), ("base", [1]), ("base", True),
                                        ("agg", 1 << 50)])
def test_hostile_round_fields_of_an_instruction_are_value_errors(key, value):
    """They raised OverflowError or TypeError, which a worker does not survive, or were
    kept (base) and raised in the next reply."""
    server, client = _pair()
    for rnd in (1, 2):
        _round(server, client, rnd, None)
    packet = server.configure(3, [0, 1])[0]
    packet.meta[key] = value
    with pytest.raises(ValueError):
        client.apply(3, packet)
    client.reply(3)  # and the worker can still reply


def test_distillation_is_local_work_a_slowdown_slows():
    """``slowdown = F`` makes local work take F times as long, and an FD worker's
    distillation ran at full speed (300 distillation steps took 0.3 s a round with
    --slowdown 20 as with 1): only training idled."""
    import dataclasses

    from p2pfl.learner import Learner
    from _strategy_ctx import config, learn_spec

    paused = []
    learn = dataclasses.replace(learn_spec(config("fd")), slowdown=5.0)
    learner = Learner(learn, 0, pause=paused.append)
    x = learner.dataset.x_test[:8]
    learner.distill(x, np.full((8, 10), 0.1, dtype=np.float32), 2)
    assert len(paused) == 1 and paused[0] > 0


def test_filter_scale_training_is_local_work_a_slowdown_slows():
    """--filter-scaling's scale training ran at full speed on a slowdown node."""
    import dataclasses

    from p2pfl.learner import Learner
    from _strategy_ctx import config, learn_spec

    paused = []
    learn = dataclasses.replace(learn_spec(config("fedavg")), slowdown=5.0)
    learner = Learner(learn, 0, pause=paused.append)
    scales = learner.train_scales([0], 2, 0.01)
    assert len(scales) == 1 and len(paused) == 1 and paused[0] > 0
