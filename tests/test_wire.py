"""Wire format: round trips, and rejection of malformed headers and frames."""

import os
import select
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.transport import Endpoint, Mailbox, ProtocolError, pack, unpack
from p2pfl.transport.wire import frames_to_arrays, tensor_frames
from p2pfl.runtime import LAUNCHER
from p2pfl.transport.counters import ByteCounter
from p2pfl.transport.endpoint import identity
from p2pfl.transport.mailbox import MAX_CONTROL, NODE_REPORTS


_ORDER = ("v", "kind", "src", "round", "seq", "codec", "lengths", "meta", "shapes", "dtypes")


def _header(**over):
    """A header in protocol 2's positional layout, every field given (10 of them)."""
    h = {"v": 2, "kind": "model", "src": 3, "round": 2, "seq": 0, "codec": "none",
         "lengths": [], "meta": {}, "shapes": [], "dtypes": []}
    h.update(over)
    return msgpack.packb([h[k] for k in _ORDER])


def test_round_trip_with_tensor_frames():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1, -2, 3], dtype=np.int8)
    frames, shapes, dtypes = tensor_frames([a, b])
    parts = pack("model", 5, 7, 9, frames=frames, shapes=shapes, dtypes=dtypes,
                 meta={"note": "x"})
    msg = unpack(parts)
    assert (msg.kind, msg.src, msg.round, msg.seq, msg.meta) == ("model", 5, 7, 9, {"note": "x"})
    out = frames_to_arrays(msg)
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1], b)
    assert msg.nbytes == sum(len(bytes(p)) for p in parts)


def test_pack_is_zero_copy_for_arrays():
    a = np.zeros(1000, dtype=np.float32)
    frames, _, _ = tensor_frames([a])
    a[0] = 5.0
    assert np.frombuffer(frames[0], np.float32)[0] == 5.0


BAD_MESSAGES = {
    "empty": [],
    "garbage header": [b"\xc1\xff\x00"],
    "header not an array": [msgpack.packb({"v": 2, "k": "model"})],
    "protocol 1's map": [msgpack.packb({"v": 1, "k": "model", "s": 3, "r": 2, "n": 0,
                                        "c": "none", "l": []})],
    "too few fields": [msgpack.packb([2, "model", 3, 2, 0, "none"])],
    "nine fields": [msgpack.packb([2, "model", 3, 2, 0, "none", [], {}, []])],
    "too many fields": [msgpack.packb([2, "model", 3, 2, 0, "none", [], {}, [], [], 1])],
    "wrong version": [_header(v=99)],
    "version 1": [_header(v=1)],
    "unknown kind": [_header(kind="exec")],
    "bool round": [_header(round=True)],
    "bool src": [_header(src=True)],
    "bool length": [_header(lengths=[True]), b"x"],
    "bool dim": [_header(lengths=[4], shapes=[[True]], dtypes=["float32"]), b"\0" * 4],
    "negative seq": [_header(seq=-1)],
    "float src": [_header(src=1.5)],
    "frame count mismatch": [_header(lengths=[4, 4]), b"abcd"],
    "length mismatch": [_header(lengths=[5]), b"abcd"],
    "shape vs length": [_header(lengths=[8], shapes=[[3]], dtypes=["float32"]), b"\0" * 8],
    "huge shape": [_header(lengths=[4], shapes=[[1 << 20, 1 << 20]], dtypes=["float32"]),
                   b"\0" * 4],
    "bad dtype": [_header(lengths=[8], shapes=[[1]], dtypes=["object"]), b"\0" * 8],
    "negative dim": [_header(lengths=[4], shapes=[[-1]], dtypes=["float32"]), b"\0" * 4],
    "meta not a map": [_header(meta=[1])],
    "meta a string": [msgpack.packb([2, "model", 3, 2, 0, "none", [], "m"])],
    "shapes without dtypes": [_header(lengths=[4], shapes=[[1]], dtypes=[]), b"\0" * 4],
    "oversized header": [b"\x80" + b"\0" * (1 << 17)],
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_malformed_messages_raise_protocol_error(name):
    with pytest.raises(ProtocolError):
        unpack(BAD_MESSAGES[name])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.binary(max_size=50), max_size=3))
def test_random_bytes_only_ever_raise_protocol_error(header, frames):
    try:
        unpack([header, *frames])
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=5), st.none(),
                          st.booleans(), st.lists(st.integers(-2**31, 2**31), max_size=3)),
                max_size=11))
def test_random_headers_only_ever_raise_protocol_error(fields):
    try:
        unpack([msgpack.packb(fields)])
    except ProtocolError:
        pass


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_endpoint_drops_and_counts_hostile_messages_then_keeps_working(ctx):
    node = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.ROUTING_ID, identity(1))  # a connection that is node 1's
    raw.connect(node.address)
    raw.send_multipart([b"not msgpack at all"])
    raw.send_multipart([_header(lengths=[10]), b"short"])
    raw.send(b"\x92\x01")  # single frame, msgpack list
    good = pack("model", 1, 1, meta={"ok": True})
    raw.send_multipart(good)  # same connection: arrives after the junk
    msg = node.recv(timeout=5.0)
    assert msg is not None and msg.meta == {"ok": True}
    assert node.counters.dropped["malformed"] == 3
    assert node.counters.total("received") == sum(len(p) for p in good)
    raw.close(linger=0)
    node.close()


def test_mailbox_buffers_future_rounds_drops_stale_and_strangers(ctx):
    a = Endpoint(ctx, 0, "inproc://mb-a")
    b = Endpoint(ctx, 1, "inproc://mb-b")
    c = Endpoint(ctx, 9, "inproc://mb-c")
    b.connect(0, a.address)
    c.connect(0, a.address)
    box = Mailbox(a, peers={1})
    box.current_round = 2
    b.send(0, "model", 1)  # stale
    b.send(0, "model", 2)
    b.send(0, "model", 3)  # early: kept for round 3
    c.send(0, "model", 2)  # not a neighbour
    b.send(0, "model", 50)  # beyond the window
    got = box.collect("model", 2, [1], timeout=2.0)
    assert list(got) == [1]
    t0 = time.monotonic()
    got3 = box.collect("model", 3, [1], timeout=5.0)
    assert list(got3) == [1] and time.monotonic() - t0 < 1.0
    assert box.collect("model", 4, [1], timeout=0.3) == {}  # reads (and drops) round 50
    drops = a.counters.dropped
    assert drops["stale_round"] == 1 and drops["unknown_sender"] == 1
    assert drops["round_out_of_window"] == 1
    for e in (a, b, c):
        e.close()


def test_a_peer_heard_for_a_later_round_is_not_waited_for(ctx):
    """A peer's messages arrive in order: once its round-4 message is here, its
    round-3 one (lost, or dropped while we were away) is not coming."""
    a = Endpoint(ctx, 0, "inproc://ahead-a")
    b = Endpoint(ctx, 1, "inproc://ahead-b")
    b.connect(0, a.address)
    box = Mailbox(a, peers={1})
    b.send(0, "model", 4)
    t0 = time.monotonic()
    assert box.collect("model", 3, [1], timeout=5.0) == {}
    assert time.monotonic() - t0 < 1.0
    for e in (a, b):
        e.close()


def test_collect_times_out_on_a_silent_peer(ctx):
    a = Endpoint(ctx, 0, "inproc://silent-a")
    box = Mailbox(a, peers={1, 2})
    t0 = time.monotonic()
    assert box.collect("model", 1, [1, 2], timeout=0.3) == {}
    assert 0.25 < time.monotonic() - t0 < 2.0
    a.close()


def test_send_to_a_dead_peer_never_blocks(ctx):
    a = Endpoint(ctx, 0, "inproc://dead-a", hwm=5)
    a.connect(1, "tcp://127.0.0.1:9")  # nobody listens there
    t0 = time.monotonic()
    for _ in range(50):
        a.send(1, "model", 1, frames=[b"x" * 100])
    assert time.monotonic() - t0 < 2.0
    assert a.counters.dropped["send_queue_full"] > 0
    a.close()


def _before_configuration(ctx, name: str, stranger: int) -> tuple:
    """Node 0, its neighbour 1 and a stranger, both connected to it, and node 0's
    mailbox before its configuration (its peers not known yet)."""
    a = Endpoint(ctx, 0, f"inproc://{name}-a")
    b = Endpoint(ctx, 1, f"inproc://{name}-b")
    c = Endpoint(ctx, stranger, f"inproc://{name}-c")
    for e in (b, c):
        e.connect(0, a.address)
    return a, b, c, Mailbox(a)


def test_hello_before_configuration_is_kept_then_strangers_dropped(ctx):
    a, b, c, box = _before_configuration(ctx, "early", 7)
    b.send(0, "hello", 0)
    c.send(0, "hello", 0)
    assert box.poll_control(0.3) is None  # reads both hellos while waiting for config
    box.peers = {1}
    got = box.collect("hello", 0, [1], timeout=1.0)
    assert list(got) == [1]
    assert a.counters.dropped["unknown_sender"] == 1
    for e in (a, b, c):
        e.close()


def test_a_late_round_heard_before_configuration_is_kept_for_the_window_set_later(ctx):
    """A restarted server worker, not yet configured (its window the default), dropped
    as out of its window the round-6 instruction its coordinator sent it again; the
    coordinator then waited the round's whole time-out (30 s in a CI run)."""
    a, b, c, box = _before_configuration(ctx, "early-late", 7)
    b.send(0, "control", 6, frames=[b"x"])
    assert box.poll_control(0.3) is None  # reads it while waiting for its config
    box.peers, box.window = {1}, 32  # configured: a worker's window is the run's rounds
    got = box.next_after("control", -1, 1, timeout=1.0)
    assert got is not None and got.round == 6
    assert "round_out_of_window" not in a.counters.dropped
    for e in (a, b, c):
        e.close()


def test_strangers_heard_before_configuration_are_dropped_when_going_asynchronous(ctx):
    """A restarted asynchronous node took a stranger's early models into its queues,
    and its mix then failed on the unknown sender (KeyError: 99)."""
    a, b, c, box = _before_configuration(ctx, "early-async", 99)
    for rnd in (1, 2):
        b.send(0, "model", rnd, frames=[b"x"])
        c.send(0, "model", rnd, frames=[b"x"])
    assert box.poll_control(0.3) is None  # reads the four models while waiting
    box.peers = {1}
    box.go_asynchronous()
    got = box.drain("model")
    assert list(got) == [1] and [m.round for m in got[1]] == [1, 2]
    assert a.counters.dropped["unknown_sender"] == 2
    for e in (a, b, c):
        e.close()


HOSTILE_VALUES = st.recursive(
    st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=5), st.none(), st.booleans(),
              st.binary(max_size=5), st.floats(allow_nan=True)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([7, 8, 10]).flatmap(
    lambda n: st.lists(HOSTILE_VALUES, min_size=n, max_size=n)))
def test_headers_with_every_field_of_any_type_only_raise_protocol_error(fields):
    """Nested lists and maps where scalars belong (unhashable kinds, list dtypes...)."""
    fields[0] = 2  # past the version check, so every other field is tried
    try:
        unpack([msgpack.packb(fields, use_bin_type=True)])
    except ProtocolError:
        pass


def test_the_header_is_a_short_array():
    parts = pack("model", 5, 7, 9, frames=[b"abcd"], codec="stc:0.01+golomb",
                 codec_ids={"stc:0.01+golomb": 0}, meta={"n": 1333})
    assert msgpack.unpackb(parts[0]) == [2, "model", 5, 7, 9, 0, [4], {"n": 1333}]
    assert len(parts[0]) == 1 + 1 + 6 + 1 + 1 + 1 + 1 + 2 + 1 + 2 + 3  # 20 bytes
    bare = pack("start", "launcher")
    assert msgpack.unpackb(bare[0]) == [2, "start", "launcher", 0, 0, "none", []]
    msg = unpack(pack("model", 1, 2, frames=tensor_frames([np.zeros(2, np.float32)])[0],
                      shapes=[[2]], dtypes=["float32"]))
    assert (msg.meta, msg.shapes, msg.dtypes) == ({}, [[2]], ["float32"])


NAMES = ("stc:0.01+golomb", "topk:0.05+quant:0.002+cabac")


def test_a_codec_in_the_table_travels_as_its_index():
    ids = {n: i for i, n in enumerate(NAMES)}
    plain = pack("model", 1, 2, frames=[b"abc"], codec=NAMES[1])
    short = pack("model", 1, 2, frames=[b"abc"], codec=NAMES[1], codec_ids=ids)
    assert msgpack.unpackb(short[0])[5] == 1
    assert len(short[0]) == len(plain[0]) - len(NAMES[1])  # 1 byte of index for 28 + 1
    assert unpack(short, codec_names=NAMES).codec == NAMES[1]
    other = pack("model", 1, 2, codec="qsgd:4", codec_ids=ids)  # not in it: a string
    assert unpack(other, codec_names=NAMES).codec == "qsgd:4"


@pytest.mark.parametrize("codec", [2, -1, 1 << 40, True, 1.0, None])
def test_a_codec_index_outside_the_table_is_a_protocol_error(codec):
    with pytest.raises(ProtocolError, match="codec"):
        unpack([_header(codec=codec)], codec_names=NAMES)
    with pytest.raises(ProtocolError, match="codec"):  # no table at all
        unpack([_header(codec=0 if codec is None else codec)])


def test_endpoints_with_one_table_exchange_indices_and_drop_unknown_ones(ctx):
    a = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    b = Endpoint(ctx, 1, "tcp://127.0.0.1:*")
    a.connect(1, b.address, emulated=False)
    for ep in (a, b):
        ep.use_codec_names(NAMES)
    sent = a.send(1, "model", 1, frames=[b"x" * 10], codec=NAMES[0])
    msg = b.recv(timeout=5.0)
    assert msg.codec == NAMES[0] and sent == msg.nbytes
    b.use_codec_names(NAMES[:1])  # a node with a shorter table: index 1 is unknown
    a.send(1, "model", 2, codec=NAMES[1])
    a.send(1, "model", 3, codec="none")
    msg = b.recv(timeout=5.0)
    assert msg.round == 3 and b.counters.dropped["malformed"] == 1
    a.close(linger=0)
    b.close(linger=0)


def test_launcher_bound_kinds_on_a_nodes_data_socket_are_dropped_not_kept(ctx):
    """An outsider naming itself the launcher on a node's data socket: its metrics,
    joins and byes were kept unread in the control queue for the node's life (and
    refreshed the launcher's liveness)."""
    node = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    box = Mailbox(node, peers={1}, control_sources={LAUNCHER})
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.ROUTING_ID, identity(LAUNCHER))
    raw.connect(node.address)
    heard = box.last_control
    for kind in ("metrics", "join", "bye", "error", "ready") * 20:
        raw.send_multipart(pack(kind, LAUNCHER, 1, frames=[b"x" * 1000]))
    box.collect("model", 1, [1], timeout=1.0)
    assert not box.control and box.last_control == heard
    assert node.counters.dropped["unexpected_kind"] == 100
    raw.close(linger=0)
    node.close()


def test_the_launchers_mailbox_takes_the_nodes_reports_and_a_node_bounds_its_commands(ctx):
    launcher = Endpoint(ctx, LAUNCHER, "inproc://reports-l")
    node = Endpoint(ctx, 0, "inproc://reports-n")
    node.connect(LAUNCHER, launcher.address, emulated=False)
    box = Mailbox(launcher, peers=set(), control_sources={0}, control_kinds=NODE_REPORTS,
                  max_control=None)
    for _ in range(100):
        node.send(LAUNCHER, "metrics", 1)
    got = [box.poll_control(2.0) for _ in range(100)]
    assert all(m is not None and m.kind == "metrics" for m in got)
    assert len(Mailbox(node).control) == 0 and Mailbox(node).control.maxlen == MAX_CONTROL
    for e in (launcher, node):
        e.close()


@pytest.mark.parametrize("peer_id", [[1], {"a": 1}, None, 1.5])
def test_a_peer_command_with_a_bad_id_is_dropped(ctx, peer_id):
    node = Endpoint(ctx, 0, "inproc://peer-cmd")
    box = Mailbox(node, peers={1}, control_sources={LAUNCHER})
    msg = unpack(pack("peer", LAUNCHER, 0, meta={"id": peer_id, "gone": True}))
    msg.channel = "control"
    box._route(msg)  # what a message on the control channel goes through
    assert node.counters.dropped["bad_peer_update"] == 1 and not box.gone
    node.close()


def test_counters_keep_two_entries_a_peer_whatever_rounds_it_names():
    c = ByteCounter()
    for rnd in range(10_000):
        c.add("received", 1, rnd, 10, "model")
    assert len(c._bytes["received"][1]) == 2
    assert c.total("received") == 100_000 and c.total("received", handshake_only=True) == 10
    assert c.payload("received", [1]) == 99_990 and c.count("received", peers=[1]) == 9_999


def test_an_endpoint_counts_a_bounded_number_of_strangers_apart(ctx):
    """A stranger naming a fresh id for each message grew a node's counters by an entry
    each, for good (a benchmark: +107 MiB for 80,000 ids).  Past MAX_STRANGERS they are
    counted together; a peer the endpoint connects to is always counted apart."""
    from p2pfl.transport.counters import OTHERS
    from p2pfl.transport.inbox import MAX_STRANGERS

    a = Endpoint(ctx, 0, "inproc://strangers-a")
    b = Endpoint(ctx, 1, "inproc://strangers-b")
    a.connect(1, "inproc://strangers-b")
    b.connect(0, a.address)
    got = 0
    for first in range(0, MAX_STRANGERS + 10, 100):  # fresh ids, a connection each
        batch = []
        for src in range(100 + first, 100 + min(first + 100, MAX_STRANGERS + 10)):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, identity(src))
            s.connect(a.address)
            s.send_multipart(pack("hello", src, 0, 0))
            batch.append(s)
        deadline = time.monotonic() + 10
        while got < first + len(batch) and time.monotonic() < deadline:
            got += a.recv(0.1) is not None
        for s in batch:
            s.close(linger=0)
    b.send(0, "hello", 0)
    got += a.recv(5.0) is not None
    per_peer = a.counters.per_peer("received")
    assert got == MAX_STRANGERS + 11 and per_peer[1] > 0 and per_peer[OTHERS] > 0
    assert len(per_peer) == MAX_STRANGERS + 2
    for e in (a, b):
        e.close()


def test_rounds_kept_while_catching_up_go_once_beyond_the_window(ctx):
    """While catching up a node keeps any later round; what lies beyond its window
    once it has caught up stayed for good, and every later collect walked it."""
    a = Endpoint(ctx, 0, "inproc://far-a")
    b = Endpoint(ctx, 1, "inproc://far-b")
    b.connect(0, a.address)
    box = Mailbox(a, peers={1})
    for rnd in range(6, 200):
        b.send(0, "model", rnd)
    b.send(0, "catchup", 5)
    assert box.answers("catchup", 5, [1], {1}, timeout=5.0)
    box.advance(5)
    assert sorted(r for (k, r), slot in box._pending.items() if slot) == list(range(6, 10))
    assert a.counters.dropped["round_out_of_window"] == 190
    for e in (a, b):
        e.close()


def test_a_long_string_sender_is_malformed():
    with pytest.raises(ProtocolError, match="at most 64"):
        unpack(pack("model", "x" * 65, 1))
    assert unpack(pack("model", "launcher", 1)).src == "launcher"


def test_a_connection_never_up_counts_as_down(ctx):
    """The launcher's watch of a node's connection: a port that refuses it is down at
    once, one that stays silent is down after the grace (since it was asked for), and
    one that comes up is not down."""
    from p2pfl.addresses import free_port
    from p2pfl.transport.liveness import CONNECT_GRACE_S, ConnectionWatch

    live = ctx.socket(zmq.PULL)
    port = live.bind_to_random_port("tcp://127.0.0.1")
    watch, socks = ConnectionWatch(), {}
    for peer in ("refused", "silent", "up"):
        socks[peer] = ctx.socket(zmq.PUSH)
        watch.watch(peer, socks[peer], now=100.0)
    socks["refused"].connect(f"tcp://127.0.0.1:{free_port()}")  # nothing listens there
    socks["up"].connect(f"tcp://127.0.0.1:{port}")
    # "silent" asks for nothing: nothing ever comes of it, as of a host that drops SYNs
    deadline = time.monotonic() + 10
    while "refused" not in watch.down_since and time.monotonic() < deadline:
        watch.poll(101.0)
        time.sleep(0.02)
    while watch.never_up("up") and time.monotonic() < deadline:  # a bound port on loopback
        watch.poll(101.0)
        time.sleep(0.02)
    assert watch.down_since == {"refused": 101.0}
    watch.poll(100.0 + CONNECT_GRACE_S + 0.5)
    assert watch.down_since == {"refused": 101.0, "silent": 100.0}
    assert watch.down_for("silent", 110.0) == 10.0 and watch.down_for("up", 110.0) == 0.0
    watch.close()
    for sock in (live, *socks.values()):
        sock.close(linger=0)


def test_every_live_peer_is_seen_up_when_watched_from_the_connect(ctx):
    """The launcher attached the monitor after connecting: a connection made meanwhile
    was never reported, and its live node counted as down 6 s later (benchmarks/
    watch_race.py: up to 19 of 60, in 5 of 10 bursts).  Watched from before the connect
    (``watch=``), each is seen."""
    from p2pfl.transport.liveness import ConnectionWatch

    n, watch = 60, ConnectionWatch()
    routers = [ctx.socket(zmq.ROUTER) for _ in range(n)]
    ports = [r.bind_to_random_port("tcp://127.0.0.1") for r in routers]
    ep = Endpoint(ctx, LAUNCHER, "tcp://127.0.0.1:*")

    def watched(i, sock):
        assert sock.getsockopt(zmq.LAST_ENDPOINT) == b""  # not connected yet
        watch.watch(i, sock)

    for i, port in enumerate(ports):
        ep.connect(i, f"tcp://127.0.0.1:{port}", control=True, heartbeat_s=2.0,
                   watch=lambda sock, i=i: watched(i, sock))
    deadline = time.monotonic() + 10
    while any(watch.never_up(i) for i in range(n)) and time.monotonic() < deadline:
        watch.poll(time.monotonic())
        time.sleep(0.05)
    assert [i for i in range(n) if watch.never_up(i)] == [] and watch.down_since == {}
    watch.close()
    ep.close()
    for r in routers:
        r.close(linger=0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _line(proc, timeout: float = 10.0) -> str:
    """The next line ``proc`` writes (its stdout unbuffered), or "" after ``timeout``."""
    out, end = b"", time.monotonic() + timeout
    while not out.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            return ""
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:
            return ""
        out += byte
    return out.decode().strip()


_CONTROL_CHILD = """
import time, zmq
from p2pfl.transport import Endpoint
ctx = zmq.Context()
ep = Endpoint(ctx, 1, "tcp://127.0.0.1:*", control="tcp://127.0.0.1:*")
print(ep.control_address, flush=True)
while True:  # a node busy with its round, reading its control socket now and then
    time.sleep(0.5)
    msg = ep.recv(0)
    while msg is not None:
        print(msg.kind, msg.round, flush=True)
        msg = ep.recv(0)
"""


def test_a_stopped_peer_is_down_until_it_answers_and_then_hears_the_launcher_again(ctx):
    """A peer process that is stopped: its kernel still accepts the launcher's new TCP
    connection once heartbeats dropped the old one, which counted as up (the run waited
    120 s of silence for it).  Only a ZMTP handshake counts now.  And once it runs again
    it hears the launcher's new connection, which its control socket refused while the
    old one was still registered there (ROUTER_HANDOVER): nothing reached it again."""
    import signal

    from p2pfl.transport.liveness import ConnectionWatch

    child = subprocess.Popen([sys.executable, "-c", _CONTROL_CHILD], cwd=ROOT,
                             stdout=subprocess.PIPE, bufsize=0)
    watch = ConnectionWatch()
    ep = Endpoint(ctx, LAUNCHER, "tcp://127.0.0.1:*")
    try:
        control = _line(child, 30.0)
        ep.connect(1, control, control=True, heartbeat_s=0.2,  # dropped after 0.6 s
                   watch=lambda sock: watch.watch(1, sock))
        ep.send(1, "heartbeat", 1)
        assert _line(child) == "heartbeat 1"

        def watched(seconds: float) -> list:
            """Whether the peer was down, every 0.05 s for ``seconds``."""
            seen, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                watch.poll(time.monotonic())
                seen.append(1 in watch.down_since)
                time.sleep(0.05)
            return seen

        assert not any(watched(0.5))
        child.send_signal(signal.SIGSTOP)
        seen = watched(3.0)
        assert seen[-1] and all(seen[seen.index(True):]), seen  # down, and stays down
        child.send_signal(signal.SIGCONT)
        assert not watched(2.0)[-1]  # up again
        ep.send(1, "heartbeat", 2)
        assert _line(child) == "heartbeat 2"
    finally:
        child.kill()
        child.wait()
        watch.close()
        ep.close()


def _two_peers(ctx, name: str) -> tuple:
    """Endpoints 0, 1 and 2 (1 and 2 connected to 0) and node 0's mailbox of both."""
    a = Endpoint(ctx, 0, f"inproc://{name}-a")
    b = Endpoint(ctx, 1, f"inproc://{name}-b")
    c = Endpoint(ctx, 2, f"inproc://{name}-c")
    b.connect(0, a.address)
    c.connect(0, a.address)
    return a, b, c, Mailbox(a, peers={1, 2})


def test_a_message_dropped_beyond_the_window_is_not_waited_for(ctx):
    """It came, too early, and was dropped: it is not coming again (a peer's messages
    arrive in order), so its round does not wait a time-out for it.  Peer 1 sends to us
    in rounds 1 and 6 only (as under a schedule), and its round 6 came while we were at
    round 1; peer 2 sends every round."""
    a, b, c, box = _two_peers(ctx, "far")
    b.send(0, "model", 1)
    c.send(0, "model", 1)
    assert box.collect("model", 1, [1, 2], timeout=5.0).keys() == {1, 2}
    b.send(0, "model", 6)  # beyond the 4-round window of round 1: dropped
    box.collect("model", 1, [], timeout=0.2)  # read it
    for rnd in range(2, 7):
        c.send(0, "model", rnd)
    for rnd in range(2, 6):
        assert box.collect("model", rnd, [2], timeout=5.0).keys() == {2}
    assert box.last_heard[1] == 6  # its latest: not past round 6
    t0 = time.monotonic()
    assert box.collect("model", 6, [1, 2], timeout=5.0).keys() == {2}
    assert time.monotonic() - t0 < 1.0, "waited for a message it had dropped"
    assert a.counters.dropped["round_out_of_window"] == 1
    for e in (a, b, c):
        e.close()


def test_a_refusal_for_another_process_of_the_node_is_dropped(ctx):
    """A join may name any control address: the launcher's answer to a refused one
    (or to a spoofed one) went there and stopped whatever node listened, though that
    was another process.  A refusal now names its process's route."""
    from p2pfl.transport.routing import Refused

    node = Endpoint(ctx, 0, "inproc://ref-data", control="inproc://ref-ctl")
    launcher = Endpoint(ctx, LAUNCHER, "inproc://ref-launcher")
    box = Mailbox(node, control_sources={LAUNCHER})
    box.own_route = b"node-0-process-a"
    launcher.send_once(0, node.control_address, "stop",
                       meta={"refused": "not you", "route": b"node-0-process-b"})
    box.idle(0.5)
    assert not box.stopped and node.counters.dropped["refusal_of_another"] == 1
    launcher.send_once(0, node.control_address, "stop",
                       meta={"refused": "you", "route": b"node-0-process-a"})
    with pytest.raises(Refused, match="refused this node: you"):
        box.idle(2.0)
    assert box.stopped
    for e in (node, launcher):
        e.close()


def test_a_flood_of_later_rounds_while_catching_up_is_held_a_few_rounds_a_peer(ctx):
    """A neighbour may answer a pull with a model for each of many later rounds; while
    the node catches up it keeps only that peer's latest few beyond its window (all of
    them held memory without bound), and an honest peer's latest rounds stay."""
    from p2pfl.transport.routing import MAX_KEPT_AHEAD

    a, b, c, box = _two_peers(ctx, "flood")
    for rnd in range(20, 1020):  # the flood
        b.send(0, "model", rnd)
    for rnd in (30, 31, 32):  # an honest neighbour, a few rounds ahead
        c.send(0, "model", rnd)
    c.send(0, "catchup", 5)
    b.send(0, "catchup", 5)
    assert set(box.answers("catchup", 5, [1, 2], {1, 2}, timeout=5.0, every=True)) == {1, 2}
    kept = {src: sorted(r for (k, r), slot in box._pending.items() if src in slot)
            for src in (1, 2)}
    assert kept[1] == list(range(1020 - MAX_KEPT_AHEAD, 1020))
    assert kept[2] == [30, 31, 32]
    assert a.counters.dropped["round_out_of_window"] == 1000 - MAX_KEPT_AHEAD
    for e in (a, b, c):
        e.close()


def test_a_peer_that_said_it_finished_is_not_waited_for_again(ctx):
    """A hostile neighbour that sent leave(done=True) and went on sending models came
    back from away with each one: nobody sent to it, it came late, it was waited for
    a time-out, then not, round after round (a run 13 times as long)."""
    a = Endpoint(ctx, 0, "inproc://done-a")
    b = Endpoint(ctx, 1, "inproc://done-b")
    b.connect(0, a.address)
    box = Mailbox(a, peers={1})
    b.send(0, "leave", 3, meta={"done": True})
    b.send(0, "model", 4)
    got = box.collect("model", 4, [1], timeout=2.0)
    assert 1 in got and 1 in box.away and 1 in box.done  # used, and never waited for
    for e in (a, b):
        e.close()
