"""Coordinator checkpoints: the file format, atomic writes, and strategy state.

Every strategy is driven for a few rounds on hand-made replies, checkpointed
to a file, restored into a freshly built strategy, and then both run the
same further rounds: every configure() packet, decoded reply, evaluate()
record, finalize() packet and summary() must be identical.
"""

import ast
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from _strategy_ctx import server_ctx
from p2pfl.compression import make_codec
from p2pfl.compression.feedback import codec_state, restore_codec
from p2pfl.server import checkpoint
from p2pfl.strategies import Reply, make_strategy
from p2pfl.strategies.base import Packet, Strategy, dense_packet
from p2pfl.strategies.fd import label_packet, quantise

N = 200
WORKERS = list(range(6))
TIMEOUT = {"code": "timeout", "reason": "no reply"}


# ------------------------------------------------------------------ drivers
def _evaluate(flat, group=0):
    """A record that changes with every bit of the model."""
    return float(flat.double().sum()), float(flat.double().abs().max()) + group


def _strategy(mode, **kw):
    ctx = server_ctx(mode, workers=WORKERS, groups={w: w // 3 for w in WORKERS}, n=N, **kw)
    ctx.evaluate = _evaluate
    return make_strategy(mode, ctx)


def _participants(rnd):
    """Workers 0-4 with one rotating absentee; worker 5 only in rounds 1, 7 and 8
    (so STC sends it the full model at round 7 and one cached update at 8)."""
    return [w for w in range(5) if w != rnd % 5] + ([5] if rnd in (1, 7, 8) else [])


def _update(rnd, w):
    """CFL-friendly updates: two opposed directions (workers 0-2 and 3-5), plus noise."""
    rng = np.random.default_rng(1000 * rnd + w)
    g = torch.zeros(N)
    g[:20] = 1.0 if w < 3 else -1.0
    scale = 0.05 if rnd == 1 else 1.0
    return scale * g + 0.01 * torch.from_numpy(rng.standard_normal(N).astype(np.float32))


def _model_reply(s, rnd, w, packet):
    if (rnd + w) % 7 == 0:
        return Reply(w, error=TIMEOUT)
    return Reply(w, content=s.decode(w, _upstream(s, rnd, w)), num_samples=w + 1)


def _upstream(s, rnd, w):
    """The worker's packet: raw float32 (fedavg, cfl) or the STC upstream codec."""
    if s.name != "stc":
        return dense_packet(_update(rnd, w))
    codec = make_codec(s.up_spec)  # trained from W_(rnd-1), as STC's replies say
    return Packet(codec.name, codec.encode(_update(rnd, w)), meta={"at": rnd - 1})


def _label_reply(s, rnd, w, packet):
    """FD: soft labels (delta-coded against what the server holds), as a worker sends them."""
    if (rnd + w) % 7 == 0:
        return Reply(w, error=TIMEOUT)
    rng = np.random.default_rng(1000 * rnd + w)
    probs = rng.dirichlet(np.ones(s.classes), s.m).astype(np.float32)
    labels = probs if s.bits == 0 else quantise(probs, s.bits)
    base, previous = s.held.get(w, (0, None))
    if not s.delta:
        base, previous = 0, None
    meta = {"n": 10, "have": packet.meta.get("agg", 0), "base": base}
    content = s.decode(w, label_packet(labels, s.bits, previous, meta))
    return Reply(w, content=content, num_samples=10, meta=meta)


def _frames(packet):
    return (packet.codec, [bytes(memoryview(f).cast("B")) for f in packet.frames],
            packet.shapes, packet.dtypes, packet.meta)


def _plain(value):
    """Records and decoded contents in a form ``==`` compares exactly."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), value.numpy().tobytes())
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _run(s, rounds, final=True):
    """Drive ``s`` through ``rounds`` (then ``finalize`` every worker, if ``final``);
    the log of everything it produced."""
    log = []
    reply = _label_reply if s.reply_kind == "softlabels" else _model_reply
    for rnd in rounds:
        packets = s.configure(rnd, _participants(rnd))
        replies = [reply(s, rnd, w, p) for w, p in packets.items()]
        s.aggregate(rnd, replies)
        log.append([{w: _frames(p) for w, p in packets.items()},
                    _plain([r.content for r in replies]), _plain(s.evaluate(rnd))])
    if final:
        log.append([{w: _frames(s.finalize(w)) for w in WORKERS}, _plain(s.summary())])
    return log


def _resume_matches(tmp_path, mode, before=4, after=5, **kw):
    """Run ``before`` rounds, checkpoint, then compare ``after`` more rounds."""
    original = _strategy(mode, **kw)
    _run(original, range(1, before + 1), final=False)
    path = tmp_path / "coordinator.ckpt"
    checkpoint.save(path, before, original.state())
    rnd, state = checkpoint.load(path)
    restored = _strategy(mode, **kw)
    restored.restore(state)
    assert rnd == before
    # the checkpointed round's record can be made again, and nothing was dropped
    assert _plain(restored.evaluate(before)) == _plain(original.evaluate(before))
    assert _plain(restored.summary()) == _plain(original.summary())
    assert _plain(restored.state()) == _plain(original.state())
    rest = range(before + 1, before + after + 1)
    assert _run(restored, rest) == _run(original, rest)
    return original


# -------------------------------------------------------- strategy resumes
def test_fedavg_resumes_bit_for_bit(tmp_path):
    _resume_matches(tmp_path, "fedavg")


@pytest.mark.parametrize("ef", ["on", "off"])
def test_stc_resumes_bit_for_bit(tmp_path, ef):
    s = _resume_matches(tmp_path, "stc", error_feedback=ef)
    assert (getattr(s.down, "residual", None) is not None) == (ef == "on")


def test_stc_with_a_stochastic_downstream_codec_resumes_its_generator(tmp_path):
    _resume_matches(tmp_path, "stc", compression_down="randk:0.1+qsgd:4")


def test_cfl_resumes_after_a_split(tmp_path):
    """One split before the checkpoint (round 2), one after it (round 7): worker 5,
    silent at the first split, stays with workers 0-2 until its updates show."""
    s = _resume_matches(tmp_path, "cfl")
    assert [sp[0] for sp in s.splits] == [2, 7]
    assert sorted(c["members"] for c in s.clusters) == [[0, 1, 2], [3, 4], [5]]


@pytest.mark.parametrize("mode, kw", [("fd", {"fd_bits": 0, "fd_delta": False}),
                                      ("cfd", {}), ("cfd", {"fd_bits": 2})])
def test_fd_resumes_bit_for_bit(tmp_path, mode, kw):
    s = _resume_matches(tmp_path, mode, **kw)
    assert s.agg_round == 9 and s.held


def test_state_is_a_copy_and_restore_checks_the_strategy():
    s = _strategy("stc")
    _run(s, range(1, 3), final=False)
    state = s.state()
    model = s.model.clone()
    state["model"].add_(1.0)
    assert torch.equal(s.model, model)
    with pytest.raises(ValueError, match="expected 'fedavg'"):
        _strategy("fedavg").restore(state)
    with pytest.raises(ValueError, match="error feedback"):
        _strategy("stc", error_feedback="off").restore(state)
    with pytest.raises(ValueError, match="shape"):
        _strategy("fedavg").restore({"strategy": "fedavg", "model": torch.zeros(N + 1)})


def test_base_strategy_has_no_checkpoints():
    s = Strategy(server_ctx("fedavg"))
    with pytest.raises(NotImplementedError, match="checkpoints"):
        s.state()
    with pytest.raises(NotImplementedError, match="checkpoints"):
        s.restore({})


@pytest.mark.parametrize("spec", ["powersgd:2", "qsgd:4", "randk:0.2+golomb"])
@pytest.mark.parametrize("ef", [False, True])
def test_codec_state_continues_bit_for_bit(spec, ef):
    """Generators and PowerSGD's warm start survive a checkpoint round trip."""
    x = [torch.randn(16, 12, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    a = make_codec(spec, error_feedback=ef)
    for t in x[:3]:
        a.encode(t)
    b = make_codec(spec, error_feedback=ef)
    restore_codec(b, checkpoint.loads(checkpoint.dumps(3, {"c": codec_state(a)}))[1]["c"])
    for t in x[3:]:
        assert [bytes(f) for f in a.encode(t)] == [bytes(f) for f in b.encode(t)]


# ------------------------------------------------------------- file format
def test_values_round_trip_exactly(tmp_path):
    f32 = torch.tensor([1.5, float("nan"), -0.0, 1e-45, float("inf")])
    state = {"f32": f32, "bf16": torch.randn(4).to(torch.bfloat16), "i64": torch.arange(5),
             "np_u8": np.arange(12, dtype=np.uint8).reshape(3, 4), "np_f64": np.ones((2, 0)),
             "scalar": np.array(7, dtype=np.int32), "tuple": (1, (2, "x")),
             "big": np.random.default_rng(0).bit_generator.state, 3: {-1: [None, True, b"\0"]},
             "float": 0.1, "neg": -(1 << 70)}
    checkpoint.save(tmp_path / "c", 12, state)
    rnd, got = checkpoint.load(tmp_path / "c")
    assert rnd == 12 and set(got) == set(state)
    assert got["f32"].dtype == torch.float32
    assert torch.equal(got["f32"].view(torch.int32), f32.view(torch.int32))  # bit-exact
    assert got["bf16"].dtype == torch.bfloat16 and torch.equal(got["bf16"], state["bf16"])
    assert isinstance(got["np_u8"], np.ndarray) and got["np_u8"].flags.writeable
    for key in ("np_u8", "np_f64", "scalar"):
        assert got[key].dtype == state[key].dtype and np.array_equal(got[key], state[key])
    assert {k: got[k] for k in ("tuple", "big", 3, "float", "neg")} == \
        {k: state[k] for k in ("tuple", "big", 3, "float", "neg")}


def test_unsupported_values_are_refused():
    for bad in ({"x": np.float32(1)}, {"x": {1.5: 1}}, {"x": {True: 1}}, {"x": object()},
                {"x": np.array(["a"])}):
        with pytest.raises(TypeError):
            checkpoint.dumps(1, bad)
    with pytest.raises(ValueError):
        checkpoint.dumps(-1, {})


def test_missing_file_is_none(tmp_path):
    assert checkpoint.load(tmp_path / "nope") is None


def test_truncated_or_garbage_files_raise_value_error(tmp_path):
    data = checkpoint.dumps(3, _strategy("stc").state())
    path = tmp_path / "c"
    header = msgpack.packb({"format": "p2pfl-checkpoint", "version": 99, "round": 1})
    flipped = bytearray(data)
    flipped[-10] ^= 0x01  # inside the model's bytes: the CRC catches it
    garbage = np.random.default_rng(0).bytes(300)
    bad = [data[:n] for n in (0, 1, 7, len(data) // 2, len(data) - 1)] + [
        data + b"\0", garbage, b"\x93\x01\x02\x03", header, bytes(flipped)]
    for blob in bad:
        path.write_bytes(blob)
        with pytest.raises(ValueError, match="checkpoint"):
            checkpoint.load(path)
    path.write_bytes(data)
    with pytest.raises(ValueError, match="limit"):
        checkpoint.load(path, max_bytes=100)


def test_lying_array_sizes_raise_value_error():
    payload = msgpack.packb(["float32", [1000], b"\0" * 8])
    body = msgpack.packb({"x": msgpack.ExtType(checkpoint.EXT_TENSOR, payload)})
    for state_body in (body, msgpack.packb({"x": msgpack.ExtType(99, b"")})):
        doc = msgpack.packb({"format": checkpoint.FORMAT, "version": checkpoint.VERSION,
                             "round": 1, "crc32": zlib.crc32(state_body),
                             "state": state_body})
        with pytest.raises(ValueError):
            checkpoint.loads(doc)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c"
    checkpoint.save(path, 1, {"model": torch.ones(N)})

    def half_then_crash(f, data):
        f.write(data[:len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, 2, {"model": torch.zeros(N)})
    rnd, state = checkpoint.load(path)
    assert rnd == 1 and torch.equal(state["model"], torch.ones(N))
    assert os.listdir(tmp_path) == ["c"]  # the partial temporary file is gone


def test_a_killed_writer_leaves_the_previous_checkpoint(tmp_path):
    """A process SIGKILLed in the middle of writing: the old file is intact."""
    path = tmp_path / "c"
    script = f"""
import os, signal, numpy as np
from p2pfl.server import checkpoint
checkpoint.save({str(path)!r}, 1, {{"x": np.arange(100000)}})
def die(f, data):
    f.write(data[:len(data) // 2]); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
checkpoint._write = die
checkpoint.save({str(path)!r}, 2, {{"x": np.zeros(100000)}})
"""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert proc.returncode == -9
    rnd, state = checkpoint.load(path)
    assert rnd == 1 and np.array_equal(state["x"], np.arange(100000))


def test_no_pickle_is_involved(tmp_path, monkeypatch):
    tree = ast.parse(Path(checkpoint.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names} | {n.module for n in ast.walk(tree)
                                     if isinstance(n, ast.ImportFrom)}
    assert not imported & {"pickle", "cPickle", "dill", "joblib", "copyreg", "shelve"}

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    for name in ("dumps", "loads", "dump", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "save", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    s = _strategy("stc")
    _run(s, range(1, 3), final=False)
    checkpoint.save(tmp_path / "c", 2, s.state())
    _strategy("stc").restore(checkpoint.load(tmp_path / "c")[1])


def test_a_checkpoint_is_private_and_other_atomic_files_follow_the_umask(tmp_path):
    """The checkpoint (model and worker states) is 0600; summaries and plots get the mode
    ``open`` gives (0666 less the umask, read when written), so that others can read what
    metrics.jsonl shows."""
    import stat

    from p2pfl.atomic import write_atomic, write_json_atomic

    for mask in (0o022, 0o027):
        old = os.umask(mask)
        try:
            folder = tmp_path / f"{mask:o}"
            checkpoint.save(folder / "c", 1, {"model": torch.ones(N)})
            write_json_atomic(folder / "summary.json", {"a": 1})
            write_atomic(folder / "plot.png", lambda fh: fh.write(b"png"))
            with open(folder / "plain", "w"):
                pass
        finally:
            os.umask(old)
        mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert mode["c"] == 0o600
        assert mode["summary.json"] == mode["plot.png"] == mode["plain"] == 0o666 & ~mask


def test_an_atomic_write_that_fails_names_its_file_and_leaves_the_old_one(tmp_path):
    """A full disk fails the write to the open temporary file, whose error names no
    file: the coordinator failed with '[Errno 28] No space left on device' alone."""
    import errno

    from p2pfl.atomic import write_atomic

    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(b"the last one")

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device") as caught:
        write_atomic(path, full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == b"the last one" and os.listdir(tmp_path) == [path.name]


def test_a_checkpoint_left_by_an_earlier_run_is_removed_at_launch(tmp_path):
    """A coordinator restarted before its run's first checkpoint resumed the earlier
    run's (another seed, another mode) from the same folder."""
    from p2pfl import run_cluster
    from p2pfl.plot import RUN_PNGS

    stale = tmp_path / "checkpoint.msgpack"
    stale.write_bytes(b"an earlier run's state")
    plots = [tmp_path / name for name in RUN_PNGS]  # they would show the earlier run
    for png in plots:
        png.write_bytes(b"an earlier run's plot")
    run_cluster("ring:3", rounds=1, in_process=True, quiet=True, out=str(tmp_path))
    assert not stale.exists() and not any(png.exists() for png in plots)


def test_a_coordinator_nobody_can_restart_writes_no_checkpoint(tmp_path):
    """Without --restart or --listen no new coordinator process can resume: its two
    fsyncs of the whole state a round (30 ms for 1 M parameters) bought nothing."""
    from p2pfl import run_cluster

    run_cluster(nodes=2, mode="fedavg", rounds=2, in_process=True, quiet=True,
                out=str(tmp_path))
    assert (tmp_path / "summary.json").exists()
    assert not (tmp_path / "checkpoint.msgpack").exists()


@pytest.mark.parametrize("mode, corrupt", [
    ("cfd", lambda st: st.update(agg_round=st["agg_round"] + 100)),
    ("cfd", lambda st: st["held"].update({0: [1]})),
    ("cfd", lambda st: st["client_has"].update({99: 1})),
    ("cfl", lambda st: st["clusters"].append({"members": [], "model": st["clusters"][0]["model"],
                                              "born": 0})),
    ("cfl", lambda st: st["splits"].append([3])),
])
def test_inconsistent_states_are_refused_at_restore(mode, corrupt):
    """They were accepted, then raised KeyError, TypeError or IndexError in a later round."""
    s = _strategy(mode)
    _run(s, range(1, 4), final=False)
    state = s.state()
    corrupt(state)
    with pytest.raises(ValueError):
        _strategy(mode).restore(state)
