"""The one way this package opens a sending socket to a peer, the routing ids its
connections carry, and how a message is read off a socket."""

from __future__ import annotations

import functools
import secrets
import time
from typing import Callable

import msgpack
import zmq

from .liveness import heartbeat_options

__all__ = ["dealer", "identity", "process_identity", "claims", "recv_parts", "put_parts",
           "shared_frames", "SHARED_FROM"]


#: Frames of at least this many bytes that go to several peers are shared
#: (:func:`shared_frames`).
SHARED_FROM = 1024
#: Send flags as plain integers (an enum's ``|`` builds a new enum member each time).
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def dealer(ctx: zmq.Context, peer, address: str, *, routing_id: bytes, hwm: int,
           security=None, heartbeat_s: float | None = None,
           watch: Callable[[zmq.Socket], None] | None = None) -> zmq.Socket:
    """A DEALER connected to ``peer`` at ``address``: it carries the sender's
    ``routing_id``, queues at most ``hwm`` messages, lingers 2 s on close, and with
    ``security`` (a :class:`~p2pfl.transport.security.Security`) is a CURVE client
    of ``peer``; with ``heartbeat_s``, its connection carries ZMTP heartbeats
    (:mod:`~p2pfl.transport.liveness`).  ``watch(sock)`` runs before it connects,
    so that a socket monitor it attaches sees every event of the connection."""
    sock = ctx.socket(zmq.DEALER)
    try:
        if heartbeat_s is not None:
            heartbeat_options(sock, heartbeat_s)
        if security is not None:
            security.client(sock, peer)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, 2000)
        if watch is not None:
            watch(sock)
        sock.connect(address)
    except BaseException:  # an unknown key, a bad address: no socket is left open
        sock.close(linger=0)
        raise
    return sock


@functools.lru_cache(maxsize=8192)  # checked on every message received
def identity(node_id) -> bytes:
    """The routing id a node's connections carry (never starts with a zero byte,
    which ZeroMQ reserves for the ids it makes up itself)."""
    return b"P" + msgpack.packb(node_id, use_bin_type=True)


def process_identity(node_id) -> bytes:
    """A routing id that names ``node_id`` and, after a ``#``, this one process: its
    messages pass as ``node_id``'s, and a second process with the same node id gets
    a connection of its own (msgpack values are self-delimiting: no node's id is a
    prefix of another's)."""
    return identity(node_id) + b"#" + secrets.token_hex(6).encode()


def claims(route: bytes, node_id) -> bool:
    """Whether a connection's routing id names ``node_id`` (:func:`process_identity`)."""
    ident = identity(node_id)
    return route == ident or route[:len(ident) + 1] == ident + b"#"


def recv_parts(sock: zmq.Socket) -> list:
    """Every part of the message waiting on ``sock``, as frames (no copy).

    What pyzmq's ``recv_multipart(copy=False)`` does, but each frame says whether
    more follow, where pyzmq asks the socket for an option once a part."""
    recv = sock.recv
    part = recv(0, copy=False)
    parts = [part]
    while part.more:
        part = recv(0, copy=False)
        parts.append(part)
    return parts


def put_parts(sock: zmq.Socket, parts: list, wait: float) -> bool:
    """Queue ``parts``; with a full queue, wait up to ``wait`` s for room.

    The parts go one ``send`` each, with plain integer flags: what pyzmq's
    ``send_multipart`` does, less its per-part type checks and flag-enum
    arithmetic (the parts here are bytes, memoryviews and frames: what ``pack`` and
    :func:`shared_frames` make).
    ZeroMQ takes a message whole or not at all: only its first part can find
    the queue full.
    """
    deadline = None
    send, last = sock.send, len(parts) - 1
    while True:
        try:
            for k, part in enumerate(parts):
                send(part, _NOBLOCK if k == last else _MORE_NOBLOCK, copy=False)
            return True
        except zmq.Again:
            if deadline is None:
                deadline = time.monotonic() + wait
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLOUT):
                return False


def shared_frames(parts: list) -> list:
    """``parts`` with each frame of ``SHARED_FROM`` bytes or more as a ``zmq.Frame``:
    copied into one ZeroMQ message (or, past pyzmq's copy threshold, taken without a
    copy) that each send then shares by reference, where a buffer is copied anew for
    every send."""
    return [p if len(p) < SHARED_FROM else zmq.Frame(p) for p in parts]
