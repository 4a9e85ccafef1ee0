"""CurveZMQ on every socket: key pairs, allow-lists and the ZAP gate.

Nothing here is a cipher or a handshake of ours.  Encryption and peer
authentication are CurveZMQ's (RFC 26, libsodium underneath); who may connect
is decided by a ZAP handler (RFC 27), run by pyzmq's own
:class:`zmq.auth.thread.ThreadAuthenticator`.  This module only configures
them:

- every receiving (ROUTER) socket is a CURVE *server* with the endpoint's key
  pair and a ZAP domain of its own; the ZAP handler admits a client only if its
  public key is on that endpoint's allow-list;
- every sending (DEALER) socket is a CURVE *client* that knows the public key
  of the peer it connects to, so it talks only to that peer;
- the ZAP handler names an admitted client by its public key (the ZAP user
  id), and the endpoint maps that key to a node id: **identity comes from the
  key**, never from a message's self-declared sender.

One authenticator serves a ZeroMQ context (ZAP is per context); endpoints
sharing a context register one domain each (:func:`gate`).
"""

from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import dataclass

import zmq

__all__ = ["KeyPair", "Security", "Gate", "gate", "HANDSHAKE_EVENTS", "handshake_drop"]

#: The socket-monitor events that mean a peer was refused at the handshake.
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def handshake_drop(event: int, value: int) -> str:
    """The drop counter for a refused handshake (a socket-monitor event)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "unknown_key"  # the ZAP handler said no (status 400)
    if (event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
        return "plaintext_peer"  # a NULL (or PLAIN) client at a CURVE server
    # e.g. a plaintext client that read our greeting first and hung up before naming
    # its own mechanism, a malformed handshake, or a peer that vanished in it
    return "handshake_failed"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both halves Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> "KeyPair":
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def from_secret(cls, secret: bytes) -> "KeyPair":
        """The pair of a secret key (the public half is derived from it)."""
        return cls(zmq.curve_public(secret), secret)

    def __repr__(self) -> str:  # never print a secret key
        return f"KeyPair(public={self.public.decode()!r})"


class Security:
    """One endpoint's CURVE setup: its key pair, its allow-list, and which node
    each allowed key stands for.

    ``bound`` maps node ids to their public keys: those keys are admitted, and
    a connection that authenticated with one is that node.  ``allowed`` are
    further keys to admit before their node ids are known (a remote node knows
    its run's keys from ``keys.toml`` but learns which id each key stands for
    from the launcher).  The ZAP handler reads the allow-list at each handshake.
    """

    def __init__(self, keys: KeyPair, bound: dict | None = None, allowed=()) -> None:
        self.keys = keys
        self._allowed: set = set()
        self._by_key: dict = {}  # public key (bytes) -> node id
        self._by_id: dict = {}  # node id -> public key
        for public in allowed:
            self._allowed.add(_key(public))
        for node, public in (bound or {}).items():
            self.bind(node, public)

    def sharing(self, keys: KeyPair) -> "Security":
        """A setup with key pair ``keys`` that shares this one's allow-list and
        bindings (actors of one host process: one table of the run's keys, not one
        each, which at 4,096 actors would be 16 million entries)."""
        other = copy.copy(self)  # shallow: the tables are this one's
        other.keys = keys
        return other

    def bind(self, node, public) -> None:
        """Admit ``node``'s public key and bind it to ``node`` (replacing an older one)."""
        public = _key(public)
        old = self._by_id.get(node)
        if old is not None and old != public:
            self._by_key.pop(old, None)
        self._by_id[node] = public
        self._by_key[public] = node
        self._allowed.add(public)

    def knows(self, node) -> bool:
        """Whether ``node``'s public key is bound (a client of it can be made)."""
        return node in self._by_id

    def allows(self, public) -> bool:
        return _key(public) in self._allowed

    def node_of(self, user_id: str | None):
        """The node id bound to a connection's ZAP user id (its Z85 key), or None."""
        return None if not user_id else self._by_key.get(user_id.encode())

    def server(self, sock: zmq.Socket, domain: str) -> None:
        """Make a receiving socket a CURVE server that asks ZAP ``domain``."""
        sock.curve_server = True
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.zap_domain = domain.encode()

    def client(self, sock: zmq.Socket, peer) -> None:
        """Make a sending socket a CURVE client of ``peer`` (whose key must be known)."""
        server_key = self._by_id.get(peer)
        if server_key is None:
            raise KeyError(f"no public key for peer {peer!r}")
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_serverkey = server_key


class Gate:
    """The ZAP handler of one context: admits a client if its key is on the
    allow-list of the domain it connects to (a ``credentials_provider`` of
    :class:`~zmq.auth.thread.ThreadAuthenticator`)."""

    _names = itertools.count()

    def __init__(self, ctx: zmq.Context) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.ctx = ctx
        self._domains: dict = {}  # domain -> Security
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()

    def register(self, security: Security) -> str:
        """A new ZAP domain whose allow-list is ``security``'s; returns its name."""
        domain = f"p2pfl-{next(self._names)}"
        self._domains[domain] = security
        self._auth.configure_curve_callback(domain, credentials_provider=self)
        return domain

    def release(self, domain: str) -> None:
        """Forget a domain; the last one stops the authenticator (before the context ends)."""
        with _LOCK:
            self._domains.pop(domain, None)
            self._auth.credentials_providers.pop(domain, None)
            if self._domains:
                return
            if _GATES.get(id(self.ctx)) is self:
                del _GATES[id(self.ctx)]
        self._auth.stop()

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: is the client's Z85 public ``key`` allowed in ``domain``?"""
        security = self._domains.get(domain)
        return security is not None and security.allows(key)


def _key(public) -> bytes:
    public = public.encode() if isinstance(public, str) else bytes(public)
    if len(public) != 40:
        raise ValueError(f"a Z85 CURVE public key has 40 characters, got {len(public)}")
    return public


_GATES: dict = {}
_LOCK = threading.Lock()


def gate(ctx: zmq.Context, security: Security) -> tuple:
    """Register ``security``'s allow-list with the context's ZAP gate (started on
    first use); return the gate and the domain to give the endpoint's sockets."""
    with _LOCK:
        g = _GATES.get(id(ctx))
        if g is None or g.ctx is not ctx:
            g = _GATES[id(ctx)] = Gate(ctx)
        return g, g.register(security)
