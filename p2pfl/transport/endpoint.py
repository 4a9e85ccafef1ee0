"""A node's ZeroMQ endpoint: one PULL socket to receive, one PUSH socket per peer.

The endpoint is owned by exactly one thread (the actor's loop); it is not
thread-safe and never shares a socket.  It knows nothing of learning: it sends
and receives :mod:`wire <p2pfl.transport.wire>` messages, counts their bytes
exactly, and turns malformed input into counted drops.
"""

from __future__ import annotations

import itertools
import time

import zmq

from .counters import ByteCounter
from .wire import DEFAULT_LIMITS, Limits, Message, ProtocolError, pack, unpack

__all__ = ["Endpoint", "bind_address"]

SCHEMES = ("tcp", "ipc", "inproc")


def bind_address(scheme: str, name: str, host: str = "127.0.0.1", run_dir: str = "/tmp") -> str:
    """An address to bind for transport ``scheme``; tcp uses an OS-chosen port."""
    if scheme == "tcp":
        return f"tcp://{host}:*"
    if scheme == "ipc":
        return f"ipc://{run_dir}/{name}.sock"
    if scheme == "inproc":
        return f"inproc://{name}"
    raise ValueError(f"unknown transport {scheme!r}; valid: {', '.join(SCHEMES)}")


class Endpoint:
    """Sockets and counters of one actor.

    Parameters
    ----------
    ctx : zmq.Context
        The process's context (inproc peers must share it).
    node_id : int or str
        The sender id written into every header.
    bind : str
        Address to bind the receiving socket to (``tcp://host:*`` picks a port).
    hwm : int
        High-water mark of each socket, in messages.
    """

    def __init__(self, ctx: zmq.Context, node_id, bind: str, *, hwm: int = 1000,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.ctx = ctx
        self.node_id = node_id
        self.limits = limits
        self.hwm = hwm
        self.counters = ByteCounter()
        self._seq = itertools.count()
        self._peers: dict = {}
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, hwm)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.setsockopt(zmq.MAXMSGSIZE, limits.max_frame_bytes)
        self._pull.bind(bind)
        self.address = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self._pull, zmq.POLLIN)

    # ------------------------------------------------------------------ peers
    def connect(self, peer, address: str) -> None:
        """Open a sending socket to ``peer`` at ``address`` (idempotent)."""
        if peer in self._peers:
            return
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.IMMEDIATE, 0)
        sock.connect(address)
        self._peers[peer] = sock

    @property
    def peers(self) -> list:
        return list(self._peers)

    # ---------------------------------------------------------------- traffic
    def send(self, peer, kind: str, round: int = 0, **fields) -> int:
        """Send one message to ``peer`` without blocking; return its size in bytes.

        A full queue (a dead or far slower peer) or an unknown peer drops the
        message, counts the drop and returns 0.  ``fields`` are those of
        :func:`wire.pack` (frames, codec, shapes, dtypes, meta).
        """
        sock = self._peers.get(peer)
        if sock is None:
            self.counters.drop("send_unknown_peer")
            return 0
        parts = pack(kind, self.node_id, round, next(self._seq), **fields)
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.counters.drop("send_queue_full")
            return 0
        nbytes = sum(len(p) if isinstance(p, bytes) else memoryview(p).nbytes for p in parts)
        self.counters.add("sent", peer, round, nbytes, kind)
        return nbytes

    def recv(self, timeout: float | None) -> Message | None:
        """Receive one valid message, waiting at most ``timeout`` seconds.

        Malformed messages are dropped and counted, and the wait goes on until
        the deadline.  Returns ``None`` on timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poller.poll(None if wait is None else int(wait * 1000) + 1):
                return None
            parts = self._pull.recv_multipart(copy=False)
            try:
                msg = unpack(parts, self.limits)
            except ProtocolError:
                self.counters.drop("malformed")
                continue
            self.counters.add("received", msg.src, msg.round, msg.nbytes, msg.kind)
            return msg

    def close(self, linger: float | None = None) -> None:
        """Close every socket.

        Pending outgoing messages get up to 2 s to leave (``linger`` seconds if
        given; 0 discards them, for when every peer is known to be done).
        """
        ms = None if linger is None else int(linger * 1000)
        for peer in list(self._peers):
            self._peers.pop(peer).close(linger=ms)
        self._pull.close(linger=0)
