"""The one way this package opens a sending socket to a peer."""

from __future__ import annotations

import zmq

from .liveness import heartbeat_options

__all__ = ["dealer"]


def dealer(ctx: zmq.Context, peer, address: str, *, routing_id: bytes, hwm: int,
           security=None, heartbeat_s: float | None = None) -> zmq.Socket:
    """A DEALER connected to ``peer`` at ``address``: it carries the sender's
    ``routing_id``, queues at most ``hwm`` messages, lingers 2 s on close, and with
    ``security`` (a :class:`~p2pfl.transport.security.Security`) is a CURVE client
    of ``peer``; with ``heartbeat_s``, its connection carries ZMTP heartbeats
    (:mod:`~p2pfl.transport.liveness`)."""
    sock = ctx.socket(zmq.DEALER)
    try:
        if heartbeat_s is not None:
            heartbeat_options(sock, heartbeat_s)
        if security is not None:
            security.client(sock, peer)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.connect(address)
    except BaseException:  # an unknown key, a bad address: no socket is left open
        sock.close(linger=0)
        raise
    return sock
