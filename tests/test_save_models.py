"""``--save-models``: every node's final model comes back to the run folder, and loads.

Real node processes over TCP.  What must hold: a saved file loads into the run's model
with ``load_state_dict(torch.load(path, weights_only=True))`` and scores exactly the
accuracy its node recorded last (so it is the model the node ended with, not an earlier
one); in fedavg every worker's file is the final global model; an earlier run's files do
not survive a run that saves none; a malformed ``weights`` message is refused (and,
from a real node, dropped and counted: ``tests/test_hostile_members.py``); a model that
cannot be saved fails no node.
"""

import msgpack
import pytest
import torch

from p2pfl import run_cluster
from p2pfl.data import load_dataset
from p2pfl.errors import UsageError
from p2pfl.model_files import checked_state, load_state, remove_stale, state_fields, write_state
from p2pfl.models import build_model
from p2pfl.training import evaluate
from p2pfl.transport.wire import pack, unpack


def _accuracy(path, model="mlp") -> float:
    ds = load_dataset("digits", seed=0)
    net = build_model(model, ds.input_shape, ds.num_classes, seed=0)
    net.load_state_dict(load_state(path))
    return evaluate(net, torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))[1]


def _last(records, node):
    return max((r for r in records if r["node"] == node), key=lambda r: r["round"])


def test_each_saved_model_scores_what_its_node_recorded_last(tmp_path):
    out = tmp_path / "run"
    res = run_cluster("ring:4", dataset="digits", rounds=4, save_models=True, quiet=True,
                      out=str(out))
    assert res.summary["models_saved"] == 4
    ds = load_dataset("digits", seed=0)
    for node in range(4):
        net = res.model(node)  # the run's model built anew, the saved state loaded
        assert not net.training
        assert evaluate(net, torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))[1] \
            == _last(res.metrics, node)["accuracy"]
    assert _accuracy(out / "models" / "node-3.pt") == _last(res.metrics, 3)["accuracy"]
    models = [load_state(out / "models" / f"node-{n}.pt") for n in range(4)]
    assert not torch.equal(models[0]["1.weight"], models[1]["1.weight"])
    # a later run into the same folder that saves none leaves no file of this one
    res = run_cluster("ring:4", dataset="digits", rounds=1, quiet=True, out=str(out))
    assert "models_saved" not in res.summary and list((out / "models").iterdir()) == []
    with pytest.raises(UsageError, match="no saved model of node 0"):
        res.model(0)


def test_a_run_of_a_module_of_yours_loads_into_that_module(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    res = run_cluster("ring:3", dataset="digits", rounds=2, model=net, save_models=True,
                      quiet=True, out=str(tmp_path / "run"))
    with pytest.raises(UsageError, match="pass it as module="):
        res.model(1)
    fresh = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert res.model(1, module=fresh) is fresh
    ds = load_dataset("digits", seed=0)
    assert evaluate(fresh, torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))[1] \
        == _last(res.metrics, 1)["accuracy"]


def test_every_fedavg_worker_saves_the_final_global_model(tmp_path):
    out = tmp_path / "run"
    res = run_cluster(mode="fedavg", nodes=3, dataset="digits", rounds=3, save_models=True,
                      quiet=True, out=str(out))
    files = sorted(p.name for p in (out / "models").iterdir())
    assert files == ["node-0.pt", "node-1.pt", "node-2.pt"]  # the coordinator's: none
    assert res.summary["models_saved"] == 3
    first = load_state(out / "models" / files[0])
    for name in files[1:]:
        other = load_state(out / "models" / name)
        assert all(torch.equal(first[k], other[k]) for k in first)
    final = res.summary["global_accuracy_per_round"][-1]
    assert final[0] == 3 and _accuracy(out / "models" / files[0]) == final[1]


def _through_the_wire(state):
    fields = state_fields(state)
    return unpack(pack("weights", 1, **fields))


def test_a_state_round_trips_with_dtypes_the_wire_does_not_carry(tmp_path):
    state = {"w": torch.randn(3, 4), "half": torch.randn(5).to(torch.bfloat16),
             "mask": torch.tensor([True, False, True]), "steps": torch.tensor(7),
             "empty": torch.zeros(0, 2, dtype=torch.float16)}
    got = checked_state(_through_the_wire(state))
    path = write_state(str(tmp_path), 5, got)
    assert path.endswith("models/node-5.pt")
    back = load_state(path)
    assert list(back) == list(state)
    for k, t in state.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t), k


def test_a_state_of_thousands_of_tensors_goes_in_one_message(tmp_path):
    """The names travel in a frame of their own: in the header (64 KiB), a model of
    2,804 entries was dropped as malformed and never saved."""
    state = {f"blocks.{i}.layer.weight": torch.full((2,), float(i)) for i in range(3000)}
    got = checked_state(_through_the_wire(state))
    assert len(got) == 3000 and got[2999][1].tolist() == [2999.0, 2999.0]
    with pytest.raises(ValueError, match="a message takes"):
        state_fields({f"t{i}": torch.zeros(1) for i in range(5000)})


def _redescribed(msg, change):
    d = msgpack.unpackb(msg.frames[0])
    change(d)
    msg.frames[0] = memoryview(msgpack.packb(d))
    return msg


@pytest.mark.parametrize("change", [
    lambda d: d.update(names=["w", "w"]),  # two tensors of one name
    lambda d: d.update(names=["w", 3]),
    lambda d: d.update(names=["w"]),  # fewer names than tensors
    lambda d: d.update(names=["w", "x" * 513]),
    lambda d: d.update(torch_dtypes=["float32", "int64"]),  # not what it was sent as
    lambda d: d.update(torch_dtypes=["float32", "complex64"]),
    lambda d: d.update(torch_dtypes="float32"),
    lambda d: d.pop("names"),
    lambda d: d.update(shapes=[[3], [1]]),  # does not fill its frame
    lambda d: d.update(shapes=[[-2], [1]]),
    lambda d: d.update(shapes=[[1] * 9 + [2], [1]]),
    lambda d: d.update(dtypes=["float32", "object"]),
    lambda d: d.update(shapes=[[2], [0, 2**62]]),  # empty, and numpy refused it: a crash
])
def test_a_malformed_state_is_refused(change):
    msg = _through_the_wire({"w": torch.ones(2), "b": torch.tensor([True])})
    assert checked_state(msg) is not None
    assert checked_state(_redescribed(msg, change)) is None


def test_a_description_that_is_not_one_is_refused():
    msg = _through_the_wire({"w": torch.ones(2)})
    bomb = b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x80" * (1 << 20)  # a million {}
    for first in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({1: 2}), b"", bomb,
                  msgpack.packb({"names": [b"w"]})):
        msg.frames[0] = memoryview(first)
        assert checked_state(msg) is None
    msg.frames = []
    assert checked_state(msg) is None


def test_what_cannot_be_sent_is_refused_before_sending():
    with pytest.raises(ValueError, match="complex"):
        state_fields({"z": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="not a dense tensor"):
        state_fields({"_extra_state": {"a": 1}})
    with pytest.raises(ValueError, match="not a dense tensor"):
        state_fields({"s": torch.zeros(3, 3).to_sparse()})


class _ExtraState(torch.nn.Module):
    """A module whose state dict holds more than tensors (``get_extra_state``)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def get_extra_state(self):
        return {"note": "not a tensor"}

    def set_extra_state(self, state):
        pass


def test_a_model_that_cannot_be_saved_fails_no_node(tmp_path):
    """Before, the node's error after its last round failed every node of the run."""
    res = run_cluster("ring:3", dataset="digits", rounds=2, model=_ExtraState(),
                      save_models=True, quiet=True, out=str(tmp_path / "run"))
    assert res.summary["failed_nodes"] == {} and res.summary["models_saved"] == 0
    assert res.summary["accuracy_mean"] is not None


def test_stale_files_of_a_folder_whose_name_is_a_pattern(tmp_path):
    """``exp[1]`` is a glob pattern that matches ``exp1``: another run's folder lost its
    files, and this one kept its own stale ones."""
    for name in ("exp1", "exp[1]"):
        (tmp_path / name / "models").mkdir(parents=True)
        (tmp_path / name / "models" / "node-0.pt").write_bytes(b"x")
    remove_stale(str(tmp_path / "exp[1]"))
    assert (tmp_path / "exp1" / "models" / "node-0.pt").exists()
    assert not (tmp_path / "exp[1]" / "models" / "node-0.pt").exists()


def test_each_node_loads_into_its_own_architecture(tmp_path):
    """Federated distillation lets nodes run different models (a profile each):
    ``Result.model`` built the run's default for every node, and loading failed."""
    prof = tmp_path / "models.toml"
    prof.write_text('[default]\nmodel = "mlp"\n[nodes.0]\nmodel = "logreg"\n'
                    '[nodes.1]\nmodel = "mlp:16"\n')
    res = run_cluster(mode="fd", nodes=3, dataset="digits", rounds=2, save_models=True,
                      profiles=str(prof), quiet=True, out=str(tmp_path / "run"))
    sizes = [sum(p.numel() for p in res.model(n).parameters()) for n in range(3)]
    assert sizes == [650, 64 * 16 + 16 + 16 * 10 + 10, 64 * 64 + 64 + 64 * 10 + 10]
