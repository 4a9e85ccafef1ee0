"""Sender identity bound to the connection, and a control channel kept apart from data.

Real ZeroMQ sockets over tcp and inproc; nothing is mocked.
"""

import threading
import time

import pytest
import zmq

from p2pfl.transport import Endpoint, Mailbox, pack
from p2pfl.transport.endpoint import identity


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _raw(ctx, address, routing_id=None):
    sock = ctx.socket(zmq.DEALER)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(address)
    return sock


def test_a_header_naming_another_sender_is_dropped_as_spoofed(ctx):
    node = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    box = Mailbox(node, peers={1, 2})
    one = _raw(ctx, node.address, identity(1))
    anonymous = _raw(ctx, node.address)  # ZeroMQ makes up a routing id
    one.send_multipart(pack("model", 2, 1, meta={"forged": True}))  # claims to be node 2
    anonymous.send_multipart(pack("model", 1, 1, meta={"forged": True}))
    one.send_multipart(pack("model", 1, 1, meta={"honest": True}))
    got = box.collect("model", 1, [1, 2], timeout=1.5)
    assert list(got) == [1] and got[1].meta == {"honest": True}
    assert node.counters.dropped["spoofed"] == 2
    for s in (one, anonymous):
        s.close(linger=0)
    node.close()


def test_a_routing_id_that_names_a_process_passes_at_the_launcher_alone(ctx):
    """`P<id>#<process>` (a node's connection to its launcher) lets a second process with
    the id reach the launcher; a node's own endpoint must not take it, or a second
    connection could send as a connected peer."""
    from p2pfl.transport.sockets import process_identity

    node = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    launcher = Endpoint(ctx, "launcher", "tcp://127.0.0.1:*", process_ids=True)
    for ep in (node, launcher):
        other = _raw(ctx, ep.address, process_identity(1))
        other.send_multipart(pack("hello", 1, 0))
        got = ep.recv(timeout=2.0)
        assert (got is not None) == (ep is launcher)
        assert ep.counters.dropped.get("spoofed", 0) == (ep is node)
        if got is not None:
            assert got.src == 1 and got.route.startswith(identity(1) + b"#")
        other.close(linger=0)
    for e in (node, launcher):
        e.close()


def test_a_second_connection_cannot_take_over_a_connected_identity(ctx):
    node = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    real = Endpoint(ctx, 1, "tcp://127.0.0.1:*")
    real.connect(0, node.address)
    real.send(0, "hello", 0)
    assert node.recv(timeout=2.0).src == 1  # node 1's connection is established
    impostor = _raw(ctx, node.address, identity(1))
    time.sleep(0.2)
    impostor.send_multipart(pack("model", 1, 1, meta={"impostor": True}))
    assert node.recv(timeout=0.5) is None  # the ROUTER refused the duplicate id
    real.send(0, "model", 1)
    assert node.recv(timeout=2.0).meta == {}
    impostor.close(linger=0)
    for e in (real, node):
        e.close()


def test_stop_is_read_before_queued_data(ctx):
    node = Endpoint(ctx, 0, "inproc://order-node", control="inproc://order-ctl")
    peer = Endpoint(ctx, 1, "inproc://order-peer")
    launcher = Endpoint(ctx, "launcher", "inproc://order-launcher")
    peer.connect(0, node.address)
    launcher.connect(0, node.control_address, control=True)
    box = Mailbox(node, peers={1}, control_sources={"launcher"})
    for rnd in range(1, 200):
        assert peer.send(0, "model", 1, frames=[b"x" * 1000])
    time.sleep(0.2)  # every data message is queued before the stop
    assert launcher.send(0, "stop")
    first = node.recv(timeout=1.0)
    assert first.kind == "stop" and first.channel == "control"
    box._route(first)
    assert box.stopped
    for e in (node, peer, launcher):
        e.close(linger=0)


def test_stop_waits_for_room_in_a_full_command_queue_instead_of_being_dropped(ctx):
    node = Endpoint(ctx, 0, "inproc://full-node", control="inproc://full-ctl", hwm=4)
    launcher = Endpoint(ctx, "launcher", "inproc://full-launcher", hwm=4)
    launcher.connect(0, node.control_address, control=True)
    for _ in range(50):  # the node is busy: heartbeats pile up, then are dropped
        launcher.send(0, "heartbeat")
    assert launcher.counters.dropped["command_queue_full"] > 0
    box = Mailbox(node, peers=set(), control_sources={"launcher"})
    reader = threading.Timer(0.3, lambda: box.poll_control(3.0))  # the node reads again
    reader.start()
    assert launcher.send(0, "stop") > 0  # waits for room instead of dropping
    reader.join()
    assert box.stopped
    for e in (node, launcher):
        e.close(linger=0)


def test_commands_on_the_data_socket_and_data_on_the_control_socket_are_dropped(ctx):
    node = Endpoint(ctx, 0, "inproc://chan-node", control="inproc://chan-ctl")
    box = Mailbox(node, peers={1}, control_sources={"launcher"})
    fake = _raw(ctx, node.address, identity("launcher"))  # a command on the data path
    fake.send_multipart(pack("stop", "launcher"))
    data_on_ctl = _raw(ctx, node.control_address, identity(1))
    data_on_ctl.send_multipart(pack("model", 1, 1))
    assert box.collect("model", 1, [1], timeout=0.5) == {}
    assert not box.stopped
    assert node.counters.dropped["wrong_channel"] == 2
    for s in (fake, data_on_ctl):
        s.close(linger=0)
    node.close()


def test_the_launchers_news_of_a_dead_peer_ends_the_wait_for_it(ctx):
    """A peer the launcher reports gone is away and done: a round waits for it no
    more.  Its restart (a new address) makes it a peer to wait for again."""
    node = Endpoint(ctx, 0, "inproc://gone-node", control="inproc://gone-ctl")
    launcher = Endpoint(ctx, "launcher", "inproc://gone-launcher")
    launcher.connect(0, node.control_address, control=True)
    box = Mailbox(node, peers={1, 2}, control_sources={"launcher"})
    launcher.send(0, "peer", meta={"id": 1, "gone": True})
    launcher.send(0, "peer", meta={"id": 9, "gone": True})  # not a peer of ours
    t0 = time.monotonic()
    assert box.collect("model", 1, [1], timeout=5.0) == {}
    assert time.monotonic() - t0 < 1.0
    assert box.away == {1} and box.done == {1}
    assert node.counters.dropped["bad_peer_update"] == 1
    late = Endpoint(ctx, 1, "inproc://gone-late")  # what it sent before it died
    late.connect(0, node.address)
    late.send(0, "model", 1)
    assert list(box.collect("model", 1, [1], timeout=1.0)) == [1]
    assert box.away == {1}  # still gone: a late message does not bring it back
    late.close(linger=0)
    launcher.send(0, "peer", meta={"id": 1, "address": "inproc://gone-elsewhere"})
    box.idle(0.2)
    assert box.done == box.away == set()
    launcher.send(0, "stop", meta={"finish": True})  # a coordinator: finish the round
    box.idle(0.2)
    assert box.finish and not box.stopped
    for e in (node, launcher):
        e.close(linger=0)


def test_a_message_for_several_peers_is_packed_once_and_counted_for_each(ctx):
    """send_many: one header and sequence number for all; every peer gets the same
    bytes (a large frame shared as one ZeroMQ message), each send is counted as a
    send would be, and an unknown peer is a counted drop, not a failure."""
    import numpy as np

    from p2pfl.transport.sockets import SHARED_FROM, shared_frames

    sender = Endpoint(ctx, 0, "tcp://127.0.0.1:*")
    peers = {j: Endpoint(ctx, j, "tcp://127.0.0.1:*") for j in (1, 2)}
    boxes = {j: Mailbox(ep, peers={0}) for j, ep in peers.items()}
    for j, ep in peers.items():
        sender.connect(j, ep.address)
    x = np.arange(10_000, dtype=np.float32)  # 40 kB: shared
    small = np.arange(4, dtype=np.float32)  # 16 B: sent as it is
    frames = [memoryview(x).cast("B"), memoryview(small).cast("B")]
    kw = dict(frames=frames, shapes=[[x.size], [small.size]], dtypes=["float32"] * 2)
    sent = sender.send_many([1, 2, 9], "model", 1, **kw)  # 9: no such peer
    one = sender.send(1, "model", 2, **kw)
    got = {j: box.collect("model", 1, [0], timeout=5.0)[0] for j, box in boxes.items()}
    assert sent == 2 * one and sender.counters.dropped["send_unknown_peer"] == 1
    assert got[1].seq == got[2].seq  # packed once
    for msg in got.values():
        assert bytes(msg.frames[0]) == x.tobytes() and bytes(msg.frames[1]) == small.tobytes()
    assert sender.counters.payload("sent", [1, 2]) == 3 * one
    assert sender.counters.count("sent", peers=[1, 2]) == 3
    assert [type(p) is zmq.Frame for p in shared_frames(frames)] == [True, False]
    assert len(frames[1]) < SHARED_FROM <= len(frames[0])
    for ep in [sender, *peers.values()]:
        ep.close(0)
