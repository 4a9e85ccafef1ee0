"""The lean round path of issue 10: one flat parameter buffer, models adopted
instead of copied, received frames read in place, and round records sent to the
launcher in batches.  Real sockets throughout."""

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zmq

from p2pfl.algorithms.base import Packet, all_finite, dense_packet, dense_tensor
from p2pfl.config import RunConfig
from p2pfl.learner import Learner
from p2pfl.memory import keep_large_blocks
from p2pfl.models import build_model, flat_parameters, flatten_params
from p2pfl.runtime import LAUNCHER, Runtime
from p2pfl.transport import Endpoint, Mailbox

from _remote import cluster_summary
from _strategy_ctx import learn_spec


def _learner(local_steps=2):
    cfg = RunConfig(dataset="digits", model="mlp:16", local_steps=local_steps, lr=0.1)
    return Learner(learn_spec(cfg, num_nodes=4), 0)


def test_flat_parameters_are_the_buffer():
    model = build_model("mlp:16-8", (1, 8, 8), 10, seed=3)
    before = flatten_params(model)
    flat = flat_parameters(model)
    assert torch.equal(flat, before)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # writing a parameter writes the buffer
    assert torch.equal(flat, flatten_params(model))
    assert not torch.equal(flat, before)


def test_learner_params_adopt_and_copies():
    ln = _learner()
    live = ln.params
    copy = ln.get_flat()
    assert torch.equal(live, copy) and live.data_ptr() != copy.data_ptr()
    ln.train()
    assert torch.equal(live, ln.get_flat())  # the live vector follows training
    assert not torch.equal(live, copy)  # the copy does not

    new = torch.randn(ln.num_params)
    old = ln.params
    snapshot = old.clone()
    ln.adopt(new)
    assert ln.params.data_ptr() == new.data_ptr()  # no copy: it is the storage now
    ln.train()
    assert torch.equal(old, snapshot)  # a message sent from the old buffer stays intact
    assert torch.equal(ln.params, new) and not torch.equal(new, snapshot)

    ln.adopt(np.zeros(ln.num_params))  # not a float32 tensor: copied in
    assert float(ln.params.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="elements"):
        ln.set_flat(torch.zeros(ln.num_params - 1))
    with pytest.raises(ValueError, match="elements"):
        ln.adopt(torch.zeros(ln.num_params + 1))


@pytest.mark.parametrize("local_steps", [0, 2])
def test_adopted_vectors_are_what_the_model_uses_next(local_steps):
    """Two adoptions and a copy-in in a row, then the model, its evaluation and its
    trainer see the last vector.  A training learner re-points its parameters at
    once (the old buffer is not kept alive); an exchange-only one when next used."""
    ln = _learner(local_steps)
    first = torch.randn(ln.num_params)
    ln.adopt(first)
    held = next(ln._model.parameters()).data_ptr()  # not through .model: no re-pointing
    assert (held == first.data_ptr()) == (local_steps > 0)
    last = torch.randn(ln.num_params)
    ln.adopt(last)
    ln.set_flat(last * 2)  # copied into the adopted buffer
    assert torch.equal(flatten_params(ln.model), last) and torch.equal(last, ln.params)
    params = list(ln.trainer.model.parameters())
    assert params[0].data_ptr() == last.data_ptr()
    other = _learner()
    other.set_flat(last)
    assert ln.evaluate() == other.evaluate()


def test_dense_tensor_reads_a_received_frame_in_place():
    x = torch.arange(100_000, dtype=torch.float32)
    frame = zmq.Frame(bytes(dense_packet(x).frames[0]))
    packet = Packet("none", [frame.buffer], [[x.numel()]], ["float32"])
    view = dense_tensor(packet, x.numel(), copy=False)
    assert torch.equal(view, x)
    assert view.data_ptr() == np.frombuffer(frame.buffer, np.uint8).ctypes.data  # no copy
    assert dense_tensor(packet, x.numel()).data_ptr() != view.data_ptr()  # the default copies
    ro = Packet("none", [bytes(frame.buffer)], [[x.numel()]], ["float32"])  # read-only
    assert torch.equal(dense_tensor(ro, x.numel(), copy=False), x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_dense_tensor_refuses_non_finite(bad):
    x = np.ones(1000, np.float32)
    x[517] = bad
    packet = Packet("none", [zmq.Frame(x.tobytes()).buffer], [[1000]], ["float32"])
    with pytest.raises(ValueError, match="non-finite"):
        dense_tensor(packet, 1000, copy=False)


def test_all_finite_is_exact_when_the_sum_overflows():
    huge = torch.full((1000,), 3e38)  # finite values whose float32 sum is inf
    assert not torch.isfinite(huge.sum())
    assert all_finite(huge)
    huge[3] = float("nan")
    assert not all_finite(huge)


def test_keep_large_blocks_on_glibc():
    assert keep_large_blocks() is True  # Linux with glibc, as CI is
    assert keep_large_blocks() is True  # idempotent


@pytest.fixture
def node_and_launcher():
    ctx = zmq.Context()
    launcher = Endpoint(ctx, LAUNCHER, "tcp://127.0.0.1:*")
    node = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    node.connect(LAUNCHER, launcher.address, emulated=False)
    spec = SimpleNamespace(id=0, label="n0", role="gossip", peers=[1],
                           runtime=SimpleNamespace(codec_names=()))
    rt = Runtime(node, Mailbox(node, control_sources={LAUNCHER}), spec)
    yield rt, launcher
    node.close(linger=0)
    launcher.close()
    ctx.term()


def _metrics(launcher, wait=2.0):
    out = []
    while (msg := launcher.recv(wait)) is not None:
        assert msg.kind == "metrics"
        out.append(msg)
        wait = 0.3
    return out


def test_records_are_batched_and_none_is_lost(node_and_launcher):
    rt, launcher = node_and_launcher
    for rnd in range(1, 201):  # fast rounds: far more than one a FLUSH_S
        rt.report(rnd, {"loss": None, "accuracy": None})
    rt.report(201, {"loss": 0.5, "accuracy": 0.9})  # evaluated: sent at once
    msgs = _metrics(launcher)
    records = [r for m in msgs for r in m.meta["records"]]
    assert [r["round"] for r in records] == list(range(1, 202))  # all, in order
    assert len(msgs) < 20  # not one message a round
    assert all(m.round == m.meta["records"][-1]["round"] for m in msgs)

    rt.flush()  # nothing held: sends nothing, and the FLUSH_S clock starts again
    rt.report(202, {"loss": None, "accuracy": None})
    time.sleep(0.01)
    rt.report(203, {"loss": None, "accuracy": None})
    assert _metrics(launcher, 0.3) == []  # held
    rt.flush()  # what the node does before its bye
    assert [r["round"] for r in _metrics(launcher)[0].meta["records"]] == [202, 203]


def test_held_records_leave_while_the_node_waits(node_and_launcher):
    rt, launcher = node_and_launcher
    rt.report(1, {"loss": None, "accuracy": None})
    rt.report(2, {"loss": None, "accuracy": None})  # held: within FLUSH_S of the first
    got = rt.gather("model", 3, [1], timeout=1.6)  # neighbour 1 is silent
    assert got == {}
    rounds = [r["round"] for m in _metrics(launcher) for r in m.meta["records"]]
    assert rounds == [1, 2]


def test_a_record_with_a_model_carries_it(node_and_launcher):
    rt, launcher = node_and_launcher
    rt.report(1, {"loss": None, "accuracy": None})
    rt.report(2, {"loss": None, "accuracy": 0.5}, np.arange(4, dtype=np.float32))
    msgs = _metrics(launcher)
    assert [r["round"] for m in msgs for r in m.meta["records"]] == [1, 2]
    last = msgs[-1]
    assert np.frombuffer(last.frames[0], "<f4").tolist() == [0, 1, 2, 3]


def test_a_node_that_diverges_stops_and_the_rest_learn(tmp_path):
    """Its neighbours dropped its non-finite model each round, counted it missed, and
    its records held NaN losses (as null); it stops now, as diverged, sending nothing."""
    prof = tmp_path / "nodes.toml"
    prof.write_text("[nodes.0]\nlr = 1e30\n")  # node 0's model overflows in its first round
    out = tmp_path / "run"
    cluster_summary(out, "--topology", "ring:6", "--rounds", "10", "--in-process",
                    "--profiles", str(prof))
    s = _strict(out / "summary.json")
    assert s["diverged_nodes"] == ["0"] and "undecodable" not in s["dropped"]
    records = [_strict(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    finals = [r for r in records if r.get("round") == 10 and r.get("node") not in (0, "0")]
    assert len(finals) == 5 and min(r["accuracy"] for r in finals) > 0.6
    assert not any(r["node"] == 0 for r in records)  # it failed in its first training


def _strict(source):
    """Parse JSON refusing NaN and Infinity, as strict parsers do."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    text = source.read_text() if hasattr(source, "read_text") else source
    return json.loads(text, parse_constant=refuse)


def test_strict_json_turns_non_finite_values_into_null():
    from p2pfl.metrics import strict_json

    got = strict_json({"a": float("nan"), "b": [1.5, float("inf"), np.float32("nan")],
                       "c": np.arange(3), "d": (np.float64(2.0), -float("inf")), "e": "x"})
    assert got == {"a": None, "b": [1.5, None, None], "c": [0, 1, 2], "d": [2.0, None],
                   "e": "x"}
    assert json.loads(json.dumps(got), parse_constant=lambda c: 1 / 0) == got


def test_final_counters_list_the_runs_peers_only(node_and_launcher):
    """Strangers naming themselves by the thousand once swelled the bye past the
    header limit, and the launcher dropped it as malformed."""
    rt, launcher = node_and_launcher
    c = rt.endpoint.counters
    c.add("received", 1, 3, 100, "model")
    for j in range(500):
        c.add("received", f"stranger-{j}" * 20, 1, 10, "model")
    final = rt.final_counters()
    assert final["received_per_peer"] == [[1, 100]]
    assert final["bytes_received"] == 100
