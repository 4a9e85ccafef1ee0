"""Addresses a user gives (``--listen``, ``--connect``, ``--host``), checked before any
node starts: one-line usage errors instead of ZeroMQ's tracebacks or a node that cannot
bind and waits out its time-out."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket

from .errors import UsageError

__all__ = ["tcp_address", "check_host", "check_listen", "check_advertise",
           "check_run_addresses", "listening", "free_port", "address_towards"]

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # one dot-separated part


def tcp_address(address: str, flag: str, *, wildcard: bool = False) -> tuple:
    """``(host, port)`` of ``tcp://HOST:PORT`` with PORT in 1-65535 (with ``wildcard``,
    a bind address: ``*`` too, as HOST for every interface and as PORT for any free one,
    port None); anything else is a usage error naming ``flag``."""
    scheme, sep, rest = str(address).partition("://")
    host, colon, port = rest.rpartition(":")
    number = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if (scheme == "tcp" and sep and colon and host and not any(c.isspace() for c in host)
            and (wildcard or host != "*") and (number or (wildcard and port == "*"))):
        return host, None if port == "*" else int(port)
    free = " or *" if wildcard else ""
    raise UsageError(f"{flag} {address!r}: expected tcp://HOST:PORT with PORT 1-65535{free}")


def check_host(host: str, flag: str = "--host") -> None:
    """A usage error unless ZeroMQ can bind TCP on ``host`` here: ``*``, a network
    interface's name, or an IPv4 address (or host name of one) of this machine."""
    if host != "*" and host not in _interfaces():
        _try_bind(host, 0, flag, host)


def check_listen(address: str, flag: str = "--listen") -> None:
    """A usage error unless ``address`` is ``tcp://HOST:PORT`` (PORT may be ``*``)
    that this machine can bind and no one else listens on."""
    host, port = tcp_address(address, flag, wildcard=True)
    if host not in _interfaces():
        _try_bind("0.0.0.0" if host == "*" else host, port or 0, flag, address)


def check_advertise(value: str, flag: str = "--advertise") -> None:
    """A usage error unless ``value`` is a host name or an IPv4 address that peers can
    put in ``tcp://VALUE:PORT``: no scheme, no port, no spaces, not ``0.0.0.0``.  A name
    need not resolve here: the peers' network may know it and this machine not."""
    parts = str(value).split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in parts) or (
            all(p.isdigit() for p in parts) and not _is_ipv4(value)):
        raise UsageError(f"{flag} {value!r}: expected a host name or IPv4 address, "
                         "no tcp:// or port")
    if value == "0.0.0.0":
        raise UsageError(f"{flag} 0.0.0.0: peers cannot reach that address; give this "
                         "host's name or IP")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def address_towards(host: str) -> str:
    """This machine's IPv4 address on its route to ``host``: what a node bound to every
    interface tells its peers, who reach it as the launcher's host would.  (Connecting
    a UDP socket picks the route and sends nothing.)  Where ``host`` has no route or
    no address yet (a name that resolves once its container is up), this machine's
    host name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody uses at ``host`` just now, below the kernel's ephemeral range
    where it can: a port the kernel picks (port 0) is one it hands out again, as the
    local port of the next outgoing connection or bind to port 0 (a test's launcher
    then found its ``--listen`` port taken: "Address already in use")."""
    import random

    low = _ephemeral_low()
    for port in random.sample(range(20000, low), min(64, max(0, low - 20000))):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (32768 where it does not say)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listening(port: int) -> bool:
    """Whether a socket of this host listens on TCP ``port`` (read from /proc/net/tcp:
    looking does not connect, so the listener counts nothing; True if it cannot tell)."""
    try:
        with open("/proc/net/tcp") as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
    except OSError:
        return True
    return any(r[1].rsplit(":", 1)[1] == f"{port:04X}" and r[3] == "0A" for r in rows)


def _interfaces() -> set:
    try:
        return {name for _, name in socket.if_nameindex()}
    except OSError:
        return set()


def _try_bind(host: str, port: int, flag: str, shown: str) -> None:
    """Bind a plain TCP socket where ZeroMQ will (IPv4, address reuse as it does)."""
    what = f"{flag} {shown!r}: " + ("" if host == shown else f"{host!r} is ")
    try:
        addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM, 0,
                                  socket.AI_PASSIVE)[0][4]
    except (socket.gaierror, UnicodeError):
        raise UsageError(f"{what}not an IPv4 address or a known host name") from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"{what}not an address of this machine") from None
            raise UsageError(f"{flag} {shown!r}: cannot bind {addr[0]}:{port}: "
                             f"{exc.strerror}") from None


def check_run_addresses(cfg) -> None:
    """A run's own bind addresses, before anything starts: ``--listen``; or ``--host``
    where this machine binds it (node processes over tcp here, or the launcher beside
    Ray's nodes)."""
    if cfg.listen:
        check_listen(cfg.listen)
    elif cfg.backend == "ray" and cfg.host is not None:
        check_host(cfg.host)
    elif cfg.backend == "local" and cfg.transport == "tcp" and not cfg.in_process:
        check_host(cfg.host or "127.0.0.1")
