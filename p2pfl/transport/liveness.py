"""Whether a connection to a peer is up: ZeroMQ's own heartbeats and socket monitor.

A node on another host can die without its launcher seeing a process exit.  The
launcher's sending socket to each such node therefore asks ZeroMQ for ZMTP
heartbeats (``ZMQ_HEARTBEAT_IVL``/``ZMQ_HEARTBEAT_TIMEOUT``, RFC 37): a peer whose
process died closes the TCP connection at once, and a peer whose host vanished
stops answering PINGs, so that its connection is dropped after the time-out.  A
socket monitor reports each ``DISCONNECTED`` event and each ``HANDSHAKE_SUCCEEDED``
(the peer's ZeroMQ answered the ZMTP greeting, with CURVE the handshake too), and
this module keeps, per peer, since when its connection has been down.  Only a
handshake counts as up, not a TCP connect: the kernel of a host whose peer process
is stopped still accepts connections, and that peer is as good as gone.  A
connection that was never up counts as down too: once an attempt to make it failed
(``CONNECT_RETRIED``: the peer's port refused it, its process died after saying
where it listens), or once it has not come up within ``CONNECT_GRACE_S`` (its
host drops what is sent to it).  The monitor must be attached before the socket
connects (:func:`~p2pfl.transport.sockets.dealer`'s ``watch``): a connection made
before it is never reported up.  Nothing here sends a message of ours.
"""

from __future__ import annotations

import time

import zmq
from zmq.utils.monitor import recv_monitor_message

__all__ = ["ConnectionWatch", "CONNECT_GRACE_S", "heartbeat_options"]

_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
#: A connection not up this long after it was asked for is down since it was asked for.
CONNECT_GRACE_S = 6.0


def heartbeat_options(sock: zmq.Socket, interval_s: float) -> None:
    """ZMTP heartbeats on ``sock``'s connections: a PING every ``interval_s``, and the
    connection dropped after three intervals without an answer.  Set before connect:
    a connection takes the options its socket had then."""
    ms = max(1, int(interval_s * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ms)


class ConnectionWatch:
    """Since when each watched peer's connection has been down (absent: up, or not
    known to have been lost), and which peers it never reached."""

    def __init__(self) -> None:
        self._monitors: dict = {}  # peer -> (monitor socket, watched socket)
        self._asked: dict = {}  # peer -> when its watch began; absent once it was up
        self.down_since: dict = {}
        # peers whose handshake failed on the security mechanism: one side has CURVE
        self.mechanism_mismatch: set = set()

    def watch(self, peer, sock: zmq.Socket, now: float | None = None) -> None:
        """Follow ``sock``'s connection to ``peer`` (replacing an earlier watch), asked
        for at ``now`` (monotonic; the present by default).  Call it before ``sock``
        connects."""
        self.forget(peer)
        self._monitors[peer] = (sock.get_monitor_socket(_EVENTS), sock)
        self._asked[peer] = time.monotonic() if now is None else now

    def poll(self, now: float) -> None:
        """Read the monitors' news without waiting."""
        for peer, (monitor, _) in self._monitors.items():
            while monitor.poll(0):
                news = recv_monitor_message(monitor)
                event = news["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.down_since.pop(peer, None)
                    self._asked.pop(peer, None)
                elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    if news["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                        self.mechanism_mismatch.add(peer)
                else:  # DISCONNECTED, or CONNECT_RETRIED: an attempt failed
                    self.down_since.setdefault(peer, now)
        for peer, asked in self._asked.items():
            if now - asked > CONNECT_GRACE_S:
                self.down_since.setdefault(peer, asked)

    def never_up(self, peer) -> bool:
        """Whether ``peer``'s connection has not been up since its watch began."""
        return peer in self._asked

    def is_down(self, peer) -> bool:
        """Whether ``peer``'s connection is down now (since the poll that saw it go)."""
        return peer in self.down_since

    def down_for(self, peer, now: float) -> float:
        """Seconds ``peer``'s connection has been down (0 while up)."""
        since = self.down_since.get(peer)
        return 0.0 if since is None else now - since

    def forget(self, peer) -> None:
        """Stop watching ``peer`` (before its socket is closed)."""
        self.down_since.pop(peer, None)
        self._asked.pop(peer, None)
        self.mechanism_mismatch.discard(peer)
        entry = self._monitors.pop(peer, None)
        if entry is not None:
            monitor, sock = entry
            try:
                sock.disable_monitor()
            except zmq.ZMQError:  # the socket is closed already
                pass
            monitor.close(linger=0)

    def close(self) -> None:
        for peer in list(self._monitors):
            self.forget(peer)
