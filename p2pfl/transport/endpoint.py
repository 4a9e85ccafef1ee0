"""A node's ZeroMQ endpoint: a data socket and a control socket, one sending socket per peer.

The endpoint is owned by exactly one thread (the actor's loop); it is not
thread-safe and never shares a socket.  It knows nothing of learning: it sends
and receives :mod:`wire <p2pfl.transport.wire>` messages, counts their bytes
exactly, and turns malformed input into counted drops.

**Identity is bound to the connection.**  Each endpoint receives on ROUTER
sockets; a peer connects with a DEALER whose routing id is derived from its
node id (:func:`~p2pfl.transport.sockets.identity`).  A data ROUTER refuses a
second connection that claims a routing id already connected (the control ROUTER
hands the launcher's id over to its newest connection: see :meth:`.Inbox.bind`),
and every message it delivers names the connection it came on, so a message whose
header names another sender than its connection is dropped and counted as
``spoofed``.  A node's connection to its launcher carries an id of its process as
well (:func:`~p2pfl.transport.sockets.process_identity`): two processes that claim one
node id both reach the launcher, which tells the second why it is refused
(:meth:`Endpoint.send_once`) instead of never hearing it.  Without CURVE the routing
id is the connecting process's own claim, so a process that connects first with a
node's id (or at all, as the launcher, to a control socket) is taken for that node;
with CURVE (``security``) the sender is the key's ZAP user id, which only the key's
holder can present.  CURVE does not run over ``inproc://``, which never leaves the
process: a message from an actor of the same host process carries no handshake
metadata and is taken by its routing id.

**Control is kept apart from data.**  The launcher's commands (``config``,
``start``, ``heartbeat``, ``stop``) go to a node's separate control socket,
which the node reads before its data socket.  A full data queue never delays
or drops a command; ``stop``, ``start`` and ``config`` wait for room (up to
``COMMAND_WAIT_S``) instead of being dropped, and heartbeats, which only say
"still here", are dropped and counted when the queue is full.
"""

from __future__ import annotations

import itertools
import time

import zmq

from ..signals import uncut
from .counters import ByteCounter
from .framing import setup_bytes, wire_bytes
from .inbox import Inbox
from .links import LOSSY_KINDS, LinkEmulator, LinkSpec
from .security import Security, gate
from .senders import Senders
from .sockets import dealer, identity, put_parts, shared_frames
from .wire import DEFAULT_LIMITS, Limits, Message, frame_nbytes, pack

__all__ = ["Endpoint", "bind_address", "identity", "COMMAND_KINDS"]

SCHEMES = ("tcp", "ipc", "inproc")
#: Launcher-to-node commands: they travel on the control channel only.
COMMAND_KINDS = frozenset({"config", "start", "heartbeat", "stop", "peer"})
#: How long a command other than a heartbeat may wait for room in a full queue.
COMMAND_WAIT_S = 2.0


def bind_address(scheme: str, name: str, host: str = "127.0.0.1", run_dir: str = "/tmp") -> str:
    """An address to bind for transport ``scheme``; tcp uses an OS-chosen port."""
    if scheme == "tcp":
        return f"tcp://{host}:*"
    if scheme == "ipc":
        return f"ipc://{run_dir}/{name}.sock"
    if scheme == "inproc":
        return f"inproc://{name}"
    raise ValueError(f"unknown transport {scheme!r}; valid: {', '.join(SCHEMES)}")


def _measure(parts: list, curve: bool) -> tuple[int, int]:
    """A message's bytes as sent (header plus frames), and on the wire (ZMTP framing,
    and CURVE's, included)."""
    sizes = [frame_nbytes(p) for p in parts]
    return sum(sizes), wire_bytes(sizes, curve)


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
    control : str, optional
        Address to bind the control socket to (nodes have one; the launcher,
        which receives no commands, does not).
    link : LinkSpec, optional
        Emulate a slow or lossy uplink on the data sent to emulated peers
        (:mod:`~p2pfl.transport.links`); ``link_seed`` seeds its jitter and loss.
        :meth:`emulate` sets it later, before the peers are connected.
    security : Security, optional
        Run every socket on CURVE with this key pair and allow-list.
    local : str, optional
        An ``inproc://`` address the data socket binds as well, for peers that
        share this process (and context): actors of one host.
    process_ids : bool
        Take a sender whose routing id names its process too
        (:func:`~p2pfl.transport.sockets.process_identity`): the launcher's endpoint.
        Elsewhere a routing id is the node's own, and a second connection with it is
        refused by the ROUTER.
    """

    def __init__(self, ctx: zmq.Context, node_id, bind: str, *, hwm: int = 1000,
                 limits: Limits = DEFAULT_LIMITS, control: str | None = None,
                 link: LinkSpec | None = None, link_seed: int = 0,
                 security: Security | None = None, local: str | None = None,
                 process_ids: bool = False) -> None:
        self.ctx = ctx
        self.node_id = node_id
        self.hwm = hwm
        self.counters = ByteCounter()
        self.security = security
        self._codec_ids: dict | None = None  # the run's codec table (use_codec_names)
        self._gate = self._domain = None
        # who sent each message (routing ids, CURVE keys, replays): senders.py
        self.senders = Senders(security, self.counters, process_ids)
        self._seq = itertools.count(time.time_ns() // 1000 if security else 0)
        if security is not None:
            self._gate, self._domain = gate(ctx, security)
        self._identity = identity(node_id)
        self._peers: dict = {}  # peer -> DEALER to its data socket
        self._commands: dict = {}  # peer -> DEALER to its control socket
        # the ROUTERs, and what is read from them: inbox.py
        self.inbox = Inbox(ctx, self.counters, self.senders, limits=limits, hwm=hwm,
                           security=security, domain=self._domain,
                           known=(self._peers, self._commands))
        self._link = None
        if link is not None:
            self.emulate(link, link_seed)
        self.control_address = self.local_address = None
        try:
            self._bind_all(bind, control, local)
        except zmq.ZMQError:
            self.close(linger=0)  # a socket left open would block the context's term()
            raise

    def _bind_all(self, bind: str, control: str | None, local: str | None) -> None:
        if control is not None:
            self._ctl = self.inbox.bind(control, "control")
            self.control_address = self._ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        self._data = self.inbox.bind(bind, "data")
        self.address = self._data.getsockopt_string(zmq.LAST_ENDPOINT)
        if local is not None:  # for peers in the same process: no engine, no buffers
            self._data.bind(local)
            self.local_address = local

    # ------------------------------------------------------------------ peers
    def connect(self, peer, address: str, *, control: bool = False,
                emulated: bool = True, heartbeat_s: float | None = None,
                routing_id: bytes | None = None, watch=None) -> None:
        """Open a sending socket to ``peer``'s data (or control) socket (idempotent).

        With a link to emulate, data to an ``emulated`` peer goes through it (the
        launcher's channel, ``emulated=False``, never does).  ``heartbeat_s``: the
        connection carries ZMTP heartbeats, so that a vanished peer is noticed.
        ``routing_id``: one of :func:`process_identity`'s, instead of the node's own.
        ``watch(sock)``: called with a socket of its own before it connects (a
        :class:`~p2pfl.transport.liveness.ConnectionWatch` sees every event).
        """
        table = self._commands if control else self._peers
        if peer in table:
            return
        routing_id = routing_id or self._identity
        if not control:
            self.counters.setup[peer] += setup_bytes(routing_id, self.security is not None)
        if self._link is not None and emulated and not control:
            self._link.connect(peer, address)
            table[peer] = self._link
            return
        table[peer] = dealer(self.ctx, peer, address, routing_id=routing_id,
                             hwm=self.hwm, security=self.security, heartbeat_s=heartbeat_s,
                             watch=watch)

    def reconnect(self, peer, address: str, *, control: bool = False,
                  heartbeat_s: float | None = None, linger: float = 0.0,
                  watch=None) -> None:
        """``peer`` moved (a restarted node): send to its new address from now on;
        what is queued for the old one gets ``linger`` seconds to leave.  If ZeroMQ
        cannot connect to ``address`` (``ZMQError``), the old socket stays."""
        table = self._commands if control else self._peers
        old = table.pop(peer, None)
        try:
            self.connect(peer, address, control=control, heartbeat_s=heartbeat_s, watch=watch)
        except zmq.ZMQError:
            if old is not None:
                table[peer] = old
            raise
        if old is not None and old is not self._link:
            old.close(linger=int(linger * 1000))

    def command_socket(self, peer):
        """The socket that carries commands to ``peer`` (None before :meth:`connect`)."""
        return self._commands.get(peer)

    def emulate(self, link: LinkSpec, seed: int = 0) -> None:
        """Send data to the peers connected from now on through an emulated link."""
        if self._link is not None:
            raise RuntimeError("this endpoint already emulates a link")
        if link.active:
            self._link = LinkEmulator(self.ctx, link, self._identity, self.hwm, self.counters,
                                      seed=seed, security=self.security)

    @property
    def peers(self) -> list:
        return list(self._peers)

    @property
    def emulated_lost(self) -> int:
        """Messages the emulated link lost (counted apart from real drops)."""
        return 0 if self._link is None else self._link.lost

    def link_backlog(self) -> int:
        """Messages queued on the emulated uplink, not yet sent (0 without one)."""
        return 0 if self._link is None else self._link.backlog()

    def discard_link_backlog(self) -> None:
        """Drop what the emulated uplink still holds, counted as ``link_unsent``; call
        before the final counters are read, when nothing queued is wanted any more."""
        if self._link is not None and self._link.backlog():
            self._link.discard()

    def use_codec_names(self, names) -> None:
        """The run's codec table: these names travel as their index, both ways
        (every node of a run holds the same table; :mod:`~p2pfl.transport.wire`)."""
        self.inbox.codec_names = tuple(names)
        self._codec_ids = {name: i for i, name in enumerate(self.inbox.codec_names)} or None

    # ---------------------------------------------------------------- traffic
    def send(self, peer, kind: str, round: int = 0, **fields) -> int:
        """Send one message to ``peer`` without blocking; return its size in bytes.

        A full queue (a dead or far slower peer) or an unknown peer drops the
        message, counts the drop and returns 0; commands go on the control
        channel and wait for room first (see the module docstring).
        ``fields`` are those of :func:`wire.pack` (frames, codec, shapes,
        dtypes, meta).
        """
        return self.send_many((peer,), kind, round, **fields)

    def send_many(self, peers, kind: str, round: int = 0, **fields) -> int:
        """Send one message to each of ``peers`` (a list or tuple; as :meth:`send` does),
        packed once: its header names no receiver, and one sequence number serves them
        all (each receiver checks the numbers of its own senders).  For two peers or
        more, each large frame becomes one ZeroMQ message that every send shares (one
        copy of a model, not one a peer).  Returns the bytes sent."""
        table = self._commands if kind in COMMAND_KINDS else self._peers
        parts = sizes = None
        sent = 0
        for peer in peers:
            sock = table.get(peer)
            if sock is None:
                self.counters.drop("send_unknown_peer")
                continue
            if parts is None:
                parts = pack(kind, self.node_id, round, next(self._seq),
                             codec_ids=self._codec_ids, **fields)
                sizes = _measure(parts, self.security is not None)
                if len(peers) > 1:
                    parts = shared_frames(parts)
            sent += self._deliver(sock, peer, kind, round, parts, *sizes)
        return sent

    def _deliver(self, sock, peer, kind: str, round: int, parts: list, nbytes: int,
                 wire: int) -> int:
        """Queue one packed message on ``peer``'s socket (or emulated link) and count it;
        0 when its queue is full."""
        command = kind in COMMAND_KINDS
        if sock is self._link:  # counted when it leaves the emulated uplink
            if sock.backlog(peer) >= self.hwm:  # as a real socket's full queue
                self.counters.drop("send_queue_full")
                return 0
            sock.send(peer, parts, (round, nbytes, kind, wire), lossy=kind in LOSSY_KINDS)
            return nbytes
        wait = COMMAND_WAIT_S if command and kind != "heartbeat" else 0
        # queued and counted, or neither: a Ctrl-C lands before or after (signals.uncut)
        return uncut(self._queue, sock, peer, kind, round, parts, nbytes, wire, wait)

    def _queue(self, sock, peer, kind: str, round: int, parts: list, nbytes: int, wire: int,
               wait: float) -> int:
        if not put_parts(sock, parts, wait):
            self.counters.drop("command_queue_full" if kind in COMMAND_KINDS
                               else "send_queue_full")
            return 0
        self.counters.add("sent", peer, round, nbytes, kind, wire=wire)
        return nbytes

    def send_once(self, peer, address: str, kind: str, **fields) -> int:
        """Send one command to ``peer`` at ``address`` over a connection of its own,
        closed at once (it lingers up to 2 s to deliver); return its size in bytes.

        For an answer to a process this endpoint does not take for ``peer``: a second
        process with its node id, or one whose join is refused.  With CURVE, nothing is
        sent (0) unless ``peer``'s key is known.
        """
        if kind not in COMMAND_KINDS or (self.security is not None
                                         and not self.security.knows(peer)):
            return 0
        try:
            sock = dealer(self.ctx, peer, address, routing_id=self._identity, hwm=1,
                          security=self.security)
        except zmq.ZMQError:  # an address ZeroMQ cannot connect to
            return 0
        try:
            parts = pack(kind, self.node_id, 0, next(self._seq), **fields)
            if not put_parts(sock, parts, 0):  # a new connection's queue has room
                return 0
        finally:
            sock.close()  # lingers: the message still leaves
        nbytes, wire = _measure(parts, self.security is not None)
        self.counters.add("sent", peer, 0, nbytes, kind, wire=wire)
        return nbytes

    def recv(self, timeout: float | None) -> Message | None:
        """Receive one valid message, waiting at most ``timeout`` seconds.

        The control socket is read first.  Malformed messages, messages whose
        header names another sender than their connection (``spoofed``) and,
        with CURVE, replayed ones are dropped and counted, as are the peers
        refused at the handshake; the wait goes on until the deadline.
        Returns ``None`` on timeout; ``msg.channel`` says where it came in.
        """
        return self.inbox.recv(timeout)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for something to read; read nothing."""
        return self.inbox.wait(timeout)

    def bind_key(self, node, public) -> None:
        """CURVE: ``public`` is ``node``'s key (told by the launcher); the messages
        held from that key are delivered next, in order."""
        self.inbox.release(self.senders.bind(node, public))

    def count_refusals(self) -> None:
        """Count the handshakes the CURVE sockets refused since the last look."""
        self.inbox.count_refusals()

    def close(self, linger: float | None = None, *, spare=()) -> None:
        """Close every socket.

        Pending outgoing messages get up to 2 s to leave (``linger`` seconds if
        given; 0 discards them, for when every peer is known to be done); those to
        the peers in ``spare`` get the 2 s whatever ``linger`` says.
        """
        ms = None if linger is None else int(linger * 1000)
        if self._link is not None:
            self._link.close(linger)
        for table in (self._peers, self._commands):
            for peer in list(table):
                sock = table.pop(peer)
                if sock is not self._link:
                    sock.close(linger=None if peer in spare else ms)
        self.inbox.close()
        if self._gate is not None:
            self._gate.release(self._domain)
            self._gate = None
