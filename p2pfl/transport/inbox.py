"""The receiving side of an endpoint: its ROUTER sockets, read control first.

What arrives is unpacked and checked (:func:`~p2pfl.transport.wire.unpack`), its
sender checked against its connection (:class:`~p2pfl.transport.senders.Senders`),
and counted; what fails is dropped and counted, and the wait goes on.  With CURVE,
each ROUTER has a monitor, so that a refused handshake is counted too.
"""

from __future__ import annotations

import os
import time
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from .counters import OTHERS, ByteCounter
from .security import HANDSHAKE_EVENTS, Security, handshake_drop
from .senders import Senders
from .sockets import recv_parts
from .wire import Limits, Message, ProtocolError, unpack

__all__ = ["Inbox", "MAX_STRANGERS"]

#: Senders this endpoint does not connect to that its counters keep apart; the rest
#: are counted together, under OTHERS.  A stranger naming a fresh id for each message
#: (each then dropped as an unknown sender) kept an entry each, for good.  A
#: neighbour's hello that comes before its address is among them.
MAX_STRANGERS = 1024


def _ms(seconds: float) -> int:
    """A poll time-out in whole milliseconds, rounded up; 0 stays 0 (do not block:
    ``recv(0)`` ends every read-out, and 1 ms there cost an actor host half its CPU)."""
    return 0 if seconds <= 0 else int(seconds * 1000) + 1


class Inbox:
    """The ROUTER sockets of one endpoint and what is read from them.

    ``known``: the endpoint's tables of peers it sends to (data and control); a
    sender in neither is a stranger, counted apart up to :data:`MAX_STRANGERS`.
    ``domain``: the ZAP domain of the endpoint's CURVE sockets.
    """

    def __init__(self, ctx: zmq.Context, counters: ByteCounter, senders: Senders, *,
                 limits: Limits, hwm: int, security: Security | None, domain,
                 known: tuple) -> None:
        self.ctx, self.counters, self.senders = ctx, counters, senders
        self.limits, self.hwm, self.security, self.domain = limits, hwm, security, domain
        self.codec_names: tuple = ()  # the run's codec table: a header's codec index
        self._known = known
        self._poller = zmq.Poller()
        self._inputs: dict = {}  # socket -> channel name, control first
        self._monitors: dict = {}  # monitor socket -> the socket it watches
        self._ready: deque = deque()  # held messages whose sender became known
        self._strangers: set = set()  # senders counted apart that are in no known table
        self._watched: set = set()  # our copies of processes' sentinels
        self.exits = 0  # watched sentinels that fired: processes that ended

    def watch_exit(self, sentinel: int) -> None:
        """Wake :meth:`recv` once when ``sentinel`` (a child process's: readable once it
        has ended) fires: the launcher learns of a dead node at once, where it looked
        only between messages (up to half a second later while its neighbours waited)."""
        fd = os.dup(sentinel)  # ours: closed here, whatever becomes of the process object
        self._watched.add(fd)
        self._poller.register(fd, zmq.POLLIN)

    def _exits(self, ready: dict) -> bool:
        """Forget the watched sentinels that fired in ``ready``; whether any did."""
        fired = [fd for fd in self._watched if fd in ready]
        for fd in fired:
            self._poller.unregister(fd)
            self._watched.discard(fd)
            os.close(fd)
        self.exits += len(fired)
        return bool(fired)

    def bind(self, address: str, channel: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        self._inputs[sock] = channel  # closed by close(), bound or not
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_frame_bytes)
        if channel == "control":
            # The launcher drops a connection whose heartbeats went unanswered (this
            # process was stopped, or cut off) and makes a new one with the same routing
            # id; without a handover, the new one is refused while the old one is still
            # registered here, and nothing from the launcher arrives again.  A sender
            # is still checked per message (its routing id, with CURVE its key).
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.security is not None:
            self.security.server(sock, self.domain)
            monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
            self._monitors[monitor] = sock
            self._poller.register(monitor, zmq.POLLIN)
        sock.bind(address)
        self._poller.register(sock, zmq.POLLIN)
        return sock

    def recv(self, timeout: float | None) -> Message | None:
        """One valid message within ``timeout`` seconds (None: no limit), or None;
        :meth:`Endpoint.recv <p2pfl.transport.endpoint.Endpoint.recv>` says more."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ready:
                return self._accept(*self._ready.popleft())
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = dict(self._poller.poll(None if wait is None else _ms(wait)))
            if not ready or (self._watched and self._exits(ready)):
                return None  # what came meanwhile is read by the next call
            if self._monitors and any(m in ready for m in self._monitors):
                self.count_refusals()  # a monitor has news: a refused handshake
            for sock, channel in self._inputs.items():  # control first
                if sock in ready:
                    break
            else:
                continue
            parts = recv_parts(sock)
            msg = self._validate(parts, channel)
            if msg is not None:
                return self._accept(msg, channel)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for something to read; read nothing."""
        if self._ready:
            return True
        return bool(self._poller.poll(_ms(timeout)))

    def _accept(self, msg: Message, channel: str) -> Message:
        msg.channel = channel
        src = msg.src
        peers, commands = self._known
        if src not in peers and src not in commands and src not in self._strangers:
            if len(self._strangers) < MAX_STRANGERS:
                self._strangers.add(src)
            else:
                src = OTHERS
        self.counters.add("received", src, msg.round, msg.nbytes, msg.kind)
        return msg

    def release(self, held) -> None:
        """Messages held back for an unknown key, now known (``Senders.bind``): they
        are delivered next, in order."""
        for parts, channel in held:
            msg = self._validate(parts, channel)
            if msg is not None:
                self._ready.append((msg, channel))

    def _validate(self, parts: list, channel: str) -> Message | None:
        try:
            msg = unpack(parts[1:], self.limits, self.codec_names)
        except ProtocolError:
            self.counters.drop("malformed")
            return None
        msg.route = parts[0].bytes
        return msg if self.senders.check(msg, parts, channel) else None

    def count_refusals(self) -> None:
        """Count the handshakes the CURVE sockets refused since the last look."""
        for monitor in self._monitors:
            while monitor.poll(0):
                event = recv_monitor_message(monitor)
                self.counters.drop(handshake_drop(event["event"], event["value"]))

    def close(self) -> None:
        """Count the last refusals, then close the monitors and the ROUTERs."""
        if self._monitors:
            self.count_refusals()
        for monitor, sock in self._monitors.items():
            sock.disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
        for fd in self._watched:
            os.close(fd)
        self._watched.clear()
        for sock in self._inputs:
            sock.close(linger=0)
