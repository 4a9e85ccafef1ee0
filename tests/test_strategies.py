"""Strategy aggregation on hand-made replies: no sockets, no cluster."""

import numpy as np
import pytest
import torch

from p2pfl.errors import ConfigError
from _strategy_ctx import client as make_test_client
from _strategy_ctx import FakeLearner, server_ctx
from p2pfl.strategies import Reply, make_strategy, weighted_mean
from p2pfl.compression import make_codec
from p2pfl.strategies.base import Packet, dense_packet
from p2pfl.strategies.cfl import bipartition, cosine_matrix, split_criterion
from p2pfl.strategies.fd import (decode_labels, dequantise, encode_labels, label_packet,
                                 quantise)
from p2pfl.strategies.fedavg import fedavg_step
from p2pfl.strategies.stc import read_catch_up

N = 200


def test_reply_carries_content_or_error():
    assert Reply(0, content=1).ok
    assert not Reply(0, error={"code": "timeout", "reason": "x"}).ok
    with pytest.raises(ValueError):
        Reply(0)
    with pytest.raises(ValueError):
        Reply(0, content=1, error={"code": "x"})


def test_fedavg_weighted_by_data_size_and_skips_errors():
    replies = [Reply(0, content=torch.ones(3), num_samples=1),
               Reply(1, content=torch.full((3,), 4.0), num_samples=3),
               Reply(2, error={"code": "timeout", "reason": "late"})]
    out = fedavg_step(torch.zeros(3), replies)
    assert torch.allclose(out, torch.full((3,), 13 / 4))
    assert torch.equal(fedavg_step(torch.ones(3), replies[2:]), torch.ones(3))
    s = make_strategy("fedavg", server_ctx("fedavg"))
    s.aggregate(1, [Reply(r.worker, content=r.content.repeat(N // 3 + 1)[:N],
                          num_samples=r.num_samples) if r.ok else r for r in replies])
    assert torch.allclose(s.model, torch.full((N,), 13 / 4))
    with pytest.raises(ValueError):
        weighted_mean([], [])


def test_select_partial_participation():
    s = make_strategy("fedavg", server_ctx("fedavg", workers=range(10), participation=0.3))
    chosen = s.select(1, list(range(10)), np.random.default_rng(0))
    assert len(chosen) == 3 and len(set(chosen)) == 3


def test_stc_update_is_ternary_and_catch_up_is_exact():
    s = make_strategy("stc", server_ctx("stc"))
    up = make_codec(s.up_spec)
    rng = np.random.default_rng(1)
    for rnd in range(1, 6):
        s.configure(rnd, [0, 1])  # workers 2 and 3 sit out every round
        ups = [torch.from_numpy(rng.standard_normal(N).astype(np.float32)) for _ in range(2)]
        s.aggregate(rnd, [Reply(w, content=s.decode(w, Packet(up.name, up.encode(u),
                                                                  meta={"at": rnd - 1})))
                          for w, u in zip((0, 1), ups)])
        last = s.down.last_sent
        assert len(torch.unique(last[last != 0].abs())) == 1  # one magnitude μ
        assert int((last != 0).sum()) == 10  # k = ⌈0.05·200⌉
    # worker 0 is one round behind: it gets exactly one compressed update
    p0 = s.configure(6, [0])[0]
    assert p0.codec != "none" and len(read_catch_up(p0)) == 1
    # worker 2 missed 5 rounds, more than the cache of 3: full model
    assert s.configure(6, [2])[2].codec == "none"


def test_stc_client_follows_server_bit_for_bit():
    client = make_test_client("stc", FakeLearner(N))
    s = make_strategy("stc", server_ctx("stc", stc_cache=10))
    rng = np.random.default_rng(2)
    for rnd in range(1, 5):
        s.configure(rnd, [1])
        s.aggregate(rnd, [Reply(1, content=torch.from_numpy(
            rng.standard_normal(N).astype(np.float32)))])
    client.apply(5, s.configure(5, [0])[0])  # 4 cached updates at once
    assert torch.equal(client.base, s.model)


def test_cfl_bipartition_separates_opposed_groups():
    a, b = torch.randn(N), torch.randn(N)
    ups = [a + 0.1 * torch.randn(N) for _ in range(3)] + [b + 0.1 * torch.randn(N)
                                                           for _ in range(3)]
    first, second = bipartition(cosine_matrix(ups))
    assert sorted([sorted(first), sorted(second)]) == [[0, 1, 2], [3, 4, 5]]
    mean_norm, max_norm = split_criterion([torch.ones(4), -torch.ones(4)])
    assert mean_norm == 0 and max_norm == 2


def _angles(degrees):
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return [torch.tensor([np.cos(a), np.sin(a)]) for a in rad]


def _max_cross(S, first, second):
    return S[np.ix_(first, second)].max()


@pytest.mark.parametrize("outlier", [95, 100])
def test_cfl_bipartition_is_the_minimax_cut_not_complete_linkage(outlier):
    """2-D updates at 0°, 10°, ..., 60° and an outlier: the optimum cuts the outlier off.

    At 95° complete linkage joins the outlier to {40°, 50°, 60°} (diameter 55°
    < 60°) and cuts {0..30°} off, at cos 10° = 0.985; at 100° its two choices
    tie (60° both) and scipy happens to pick the optimum.
    """
    S = cosine_matrix(_angles([0, 10, 20, 30, 40, 50, 60, outlier]))
    first, second = bipartition(S)
    assert (first, second) == ([0, 1, 2, 3, 4, 5, 6], [7])
    assert _max_cross(S, first, second) == pytest.approx(np.cos(np.deg2rad(outlier - 60)))


def test_cfl_bipartition_matches_brute_force():
    """Over random similarity matrices, no bi-partition has a smaller largest cross similarity."""
    import itertools

    rng = np.random.default_rng(3)
    for m in (2, 3, 5, 8):
        for _ in range(20):
            S = cosine_matrix([torch.from_numpy(v) for v in rng.standard_normal((m, 3))])
            first, second = bipartition(S)
            assert sorted(first + second) == list(range(m)) and first and second
            assert 0 in first
            best = min(_max_cross(S, [0, *a], [i for i in range(1, m) if i not in a])
                       for r in range(m - 1) for a in itertools.combinations(range(1, m), r))
            assert _max_cross(S, first, second) == pytest.approx(best)


def test_cfl_splits_at_stationarity_only():
    s = make_strategy("cfl", server_ctx("cfl", workers=range(4), groups={0: 0, 1: 0, 2: 1, 3: 1}))
    g = torch.zeros(N)
    g[:10] = 1.0
    same = [Reply(w, content=g * 0.1) for w in range(4)]  # small, congruent: no split
    s.aggregate(1, same)
    assert len(s.clusters) == 1
    opposed = [Reply(w, content=g if w < 2 else -g) for w in range(4)]  # mean 0, max 3.2
    s.aggregate(2, opposed)
    assert sorted(c["members"] for c in s.clusters) == [[0, 1], [2, 3]]
    assert s.summary()["split_rounds"] == [2]
    assert s.summary()["clusters"] == [["w0", "w1"], ["w2", "w3"]]
    assert "cluster_accuracy" in s.evaluate(2)


def test_cfl_global_accuracy_is_the_honest_workers():
    """A cluster of liars alone weighs nothing in the global accuracy (the progress bar's
    and --target-accuracy's): counted, it held a run's 0.96 for the honest workers at 0.79."""
    import dataclasses

    ctx = server_ctx("cfl", workers=range(4))
    ctx = dataclasses.replace(ctx, byzantine=frozenset({0}),
                              evaluate=lambda flat, group=0: (0.0, float(flat[0])))
    s = make_strategy("cfl", ctx)
    liars, honest = torch.zeros(N), torch.ones(N)
    s.clusters = [{"members": [0], "model": liars, "born": 1},
                  {"members": [1, 2, 3], "model": honest, "born": 1}]
    got = s.evaluate(2)
    assert got["cluster_accuracy"] == [0.0, 1.0] and got["global_accuracy"] == 1.0
    s.clusters[0]["members"] = [0, 1]  # an honest worker the liar drew into its cluster
    s.clusters[1]["members"] = [2, 3]
    assert s.evaluate(3)["global_accuracy"] == pytest.approx(2 / 3)


def test_fd_quantiser_and_wire_format():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), 64)
    for bits in (1, 2, 4):
        q = quantise(p, bits)
        assert (q.astype(int).sum(1) == (1 << bits) - 1).all()
        assert np.array_equal(decode_labels(encode_labels(q, bits), 64, 10, bits), q)
    assert np.array_equal(quantise(p, 1).argmax(1), p.argmax(1))
    q = quantise(p, 1)
    q2 = q.copy()
    q2[5] = np.roll(q2[5], 1)
    frame = encode_labels(q2, 1, q)
    assert len(frame) == 1 + 8 + 1  # flag, 64-row bitmap, one base-10 digit
    assert np.array_equal(decode_labels(frame, 64, 10, 1, q), q2)
    assert len(encode_labels(q, 1)) == 1 + int(np.ceil(64 * np.log2(10) / 8))
    with pytest.raises(ValueError):
        decode_labels(frame, 64, 10, 1, None)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_fd_quantiser_error_bounds(bits):
    """Q_b is the L1-nearest level vector with row sum L = 2^b − 1 (fd.quantise): an
    entry that plain rounding already fits is off by at most half a step 1/(2L);
    the sum repair moves an entry to the other neighbouring level, still < 1 step."""
    rng = np.random.default_rng(bits)
    p = np.concatenate([rng.dirichlet(np.full(10, a), 200) for a in (0.1, 1.0, 10.0)])
    L = (1 << bits) - 1
    err = np.abs(dequantise(quantise(p, bits), bits) - p) * L  # in steps
    fits = np.rint(p * L).sum(1) == L  # rows that need no sum repair
    assert fits.any() and not fits.all()
    assert err[fits].max() <= 0.5 + 1e-5
    assert err.max() < 1.0


@pytest.mark.parametrize("bits", [2, 4])
def test_fd_quantiser_is_l1_nearest(bits):
    """Brute force over every level vector of 4 classes summing to L."""
    L = (1 << bits) - 1
    grid = np.stack(np.meshgrid(*[np.arange(L + 1)] * 4, indexing="ij"), -1).reshape(-1, 4)
    comps = grid[grid.sum(1) == L] / L
    p = np.random.default_rng(7).dirichlet(np.ones(4), 300)
    best = np.abs(comps[None] - p[:, None]).sum(2).min(1)
    got = np.abs(dequantise(quantise(p, bits), bits) - p).sum(1)
    np.testing.assert_allclose(got, best, atol=1e-6)


def test_fd_aggregate_is_majority_and_delta_needs_held_reference():
    s = make_strategy("cfd", server_ctx("cfd", workers=range(3)))
    m, c = s.m, s.classes
    votes = [np.eye(c, dtype=np.uint8)[np.full(m, k)] for k in (3, 3, 7)]
    replies = [Reply(w, content=v, meta={"have": 0}) for w, v in enumerate(votes)]
    s.aggregate(1, replies)
    assert (s.sent[1].argmax(1) == 3).all()
    packet = label_packet(votes[0], 1, votes[0], {"base": 9})
    with pytest.raises(ValueError):
        s.decode(0, packet)  # round 9 is not held
    packet.meta["base"] = 1
    assert np.array_equal(s.decode(0, packet), votes[0])
    fd = make_strategy("fd", server_ctx("fd", workers=range(2), fd_bits=0, fd_delta=False))
    probs = [np.full((fd.m, c), 0.1, dtype=np.float32)] * 2
    fd.aggregate(1, [Reply(w, content=p) for w, p in enumerate(probs)])
    assert np.allclose(fd.sent[1], 0.1)


def test_unknown_mode_lists_valid_choices():
    with pytest.raises(ConfigError, match="valid: fedavg, stc, cfl, fd, cfd"):
        make_strategy("nope", server_ctx("fedavg"))


def test_dense_packet_round_trip():
    from p2pfl.strategies.base import dense_tensor

    x = torch.randn(7)
    assert torch.equal(dense_tensor(dense_packet(x), 7), x)


class _TrainingLearner(FakeLearner):
    """A FakeLearner whose training moves the model (seeded per worker and round)."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n)
        self.rng = np.random.default_rng(seed)

    def train(self) -> float:
        self.flat = self.flat + torch.from_numpy(self.rng.standard_normal(self.num_params)
                                                 .astype(np.float32))
        return 0.0


def _stc_round(server, clients: dict, rnd: int, lost=()) -> list:
    """One STC round; the instructions to the workers in ``lost`` never arrive."""
    from p2pfl.strategies.stc import OutOfSync

    replies = []
    for w, packet in server.configure(rnd, sorted(clients)).items():
        if w in lost:
            replies.append(Reply(w, error={"code": "timeout", "reason": "lost"}))
            continue
        c = clients[w]
        c.apply(rnd, packet)
        c.fit()
        try:
            replies.append(Reply(w, content=server.decode(w, c.reply(rnd))))
        except OutOfSync as exc:
            replies.append(Reply(w, error={"code": exc.code, "reason": str(exc)}))
    server.aggregate(rnd, replies)
    return replies


def _stc_pair(cache=10):
    server = make_strategy("stc", server_ctx("stc", workers=(0, 1), stc_cache=cache))
    clients = {w: make_test_client("stc", _TrainingLearner(N, w)) for w in (0, 1)}
    return server, clients


def _finish(server, clients):
    for w, c in clients.items():
        c.finish(server.finalize(w))
        assert torch.equal(c.base, server.model), f"worker {w} drifted from the server"


@pytest.mark.parametrize("cache", [10, 1])
def test_stc_a_lost_instruction_is_caught_up_from_the_round_the_worker_holds(cache):
    """The server once marked a worker synced when it built the instruction, so an
    instruction lost on the way left that worker a round behind for good."""
    server, clients = _stc_pair(cache)
    for rnd in range(1, 6):
        _stc_round(server, clients, rnd, lost=(1,) if rnd == 3 else ())
    _finish(server, clients)


def test_stc_a_round_repeated_after_a_coordinator_restart_is_not_applied_twice():
    server, clients = _stc_pair()
    for rnd in (1, 2):
        _stc_round(server, clients, rnd)
    state = server.state()  # the checkpoint after round 2
    _stc_round(server, clients, 3)  # round 3 played, then the coordinator dies
    server = make_strategy("stc", server_ctx("stc", workers=(0, 1), stc_cache=10))
    server.restore(state)
    for rnd in (3, 4, 5):  # the restarted coordinator repeats round 3
        _stc_round(server, clients, rnd)
    _finish(server, clients)


def test_stc_a_restarted_worker_says_it_is_behind_and_is_caught_up():
    server, clients = _stc_pair()
    for rnd in (1, 2, 3):
        _stc_round(server, clients, rnd)
    clients[1] = make_test_client("stc", _TrainingLearner(N, 7))  # a new process: W_0
    replies = _stc_round(server, clients, 4)
    assert [r.error["code"] for r in replies if not r.ok] == ["desync"]
    assert clients[1].base.abs().sum() == 0  # it trained nothing and kept W_0
    _stc_round(server, clients, 5)
    _finish(server, clients)


@pytest.mark.parametrize("meta", [{}, {"at": -1}, {"at": True}, {"at": 99}, {"at": "1"},
                                  {"at": 0, "base": 5}, {"at": 3, "base": 0}])
def test_stc_hostile_round_fields_are_value_errors(meta):
    server, clients = _stc_pair()
    packet = server.configure(1, [0])[0]
    packet.meta = dict(meta)
    with pytest.raises(ValueError):
        clients[0].apply(1, packet)
    reply = clients[1].reply(1)
    reply.meta = {k: v for k, v in meta.items() if k != "base"}
    if reply.meta.get("at") != 0:  # 0 is the one round the server may hear now
        with pytest.raises(ValueError):
            server.decode(1, reply)


@pytest.mark.parametrize("n", [0, -3, True, 1.5, "12", [4], None, float("nan"), 2**40 + 1])
def test_a_hostile_declared_data_size_is_a_value_error_not_a_crash(n):
    """A reply's data size weights the mean: 0 made the round's mean raise (the
    coordinator died), a string or a list raised TypeError or ValueError in int()."""
    from p2pfl.server.coordinator import declared_size

    with pytest.raises(ValueError) as err:
        declared_size({"n": n})
    assert err.value.code == "bad_size"
    assert declared_size({"n": 7}) == 7 and declared_size({}) == 1


def test_a_deeply_nested_declared_size_is_a_value_error():
    """Formatting it with repr raised RecursionError, which the coordinator does not
    catch."""
    from p2pfl.server.coordinator import declared_size

    nested = 1
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ValueError, match="list"):
        declared_size({"n": nested})


class _ScriptedRuntime:
    """The verbs a server-mode worker uses, fed from a list of instructions."""

    def __init__(self, instructions) -> None:
        from types import SimpleNamespace

        self.instructions, self.sent, self.stopped = list(instructions), [], False
        self.mailbox = SimpleNamespace(window=0)

    def clock(self):
        return 0.0

    def next_after(self, kind, after, src, timeout):
        # one instruction a wait, none queued: a look that does not wait finds nothing
        return self.instructions.pop(0) if self.instructions and timeout else None

    def send(self, peer, kind, rnd, packet=None, **meta):
        self.sent.append((kind, rnd, packet))

    def report(self, *a, **k):
        pass

    def drop(self, reason):
        raise AssertionError(f"dropped: {reason}")

    def idle(self, s):
        pass

    def compute(self, fn):
        return fn()


def test_a_worker_sends_its_reply_again_for_a_round_a_restarted_coordinator_repeats():
    """Serving the repeated round anew encoded a second update: error feedback then
    counted the first one's unsent part twice, and CFD's second labels were not those
    the server already held."""
    from p2pfl.config_files import from_sources
    from p2pfl.plan import plan
    from p2pfl.server.worker import Worker
    from p2pfl.transport.wire import Message

    p = plan(from_sources(None, dict(mode="fedavg", nodes=2, rounds=3, dataset="digits",
                                     compression="topk:0.05")))
    spec = p.specs[0]

    def instruction(rnd, model, final=False):
        packet = dense_packet(model)
        meta = dict(packet.meta, **({"final": True} if final else {}))
        return Message(kind="control", src=2, round=rnd, seq=rnd, codec="none",
                       shapes=packet.shapes, dtypes=packet.dtypes, meta=meta,
                       frames=packet.frames, header_bytes=0)

    rt = _ScriptedRuntime([])
    worker = Worker(rt, spec)
    w0 = worker.learner.get_flat()
    rt.instructions = [instruction(1, w0), instruction(1, w0), instruction(2, w0, final=True)]
    calls = []
    reply = worker.client.reply
    worker.client.reply = lambda rnd: calls.append(rnd) or reply(rnd)
    worker.run()
    replies = [(rnd, packet) for kind, rnd, packet in rt.sent if kind == "update"]
    assert [rnd for rnd, _ in replies] == [1, 1] and calls == [1]
    assert replies[0][1] is replies[1][1]  # the very same packet, encoded once


@pytest.mark.parametrize("codec, auto", [("qsgd:4", False), ("terngrad", False),
                                         ("randk:0.1:scaled", False), ("randk:0.1", True),
                                         ("topk:0.05", True), ("qsgd:4+cabac", False),
                                         ("topk:0.05+qsgd:4", False),
                                         ("powersgd:2+qsgd:4", False)])
def test_server_error_feedback_is_off_by_default_for_unbiased_codecs(codec, auto):
    """Error feedback assumes a contractive compressor: with qsgd:4 FedAvg's residual grew
    and the run stayed near chance (benchmarks/unbiased_feedback.py)."""
    from tests._strategy_ctx import options

    fa = options("fedavg", compression=codec, error_feedback="auto")
    assert fa.error_feedback_up is auto
    assert options("fedavg", compression=codec, error_feedback="on").error_feedback_up
    stc = options("stc", compression=codec, compression_down="auto", error_feedback="auto")
    assert (stc.error_feedback_up, stc.error_feedback_down) == (auto, auto)


def test_raw_updates_record_no_error_feedback():
    """FedAvg without a codec sends raw float32, which loses nothing: its options (and
    config.json) said error_feedback_up: true, a residual that never existed."""
    from tests._strategy_ctx import options

    assert not options("fedavg", compression="none", error_feedback="auto").error_feedback_up
    stc = options("stc", compression="none", compression_down="none", error_feedback="auto")
    assert stc.error_feedback_up and not stc.error_feedback_down  # stc:0.01+golomb up
