"""Checking a run's defences from outside: hostile clients and a loopback capture.

Used by the tests and ``benchmarks/secure.py``; a user can point them at a
run of their own (addresses and public keys are in its ``nodes.json``).

- :func:`hostile_clients` sends messages to a node the way an intruder would:
  as a plaintext client, or as a CURVE client whose key is not on the run's
  allow-list.  Each message goes on a connection of its own, so each one is a
  separate handshake for the node to refuse.
- :class:`LoopbackCapture` records the packets on the loopback interface with
  a raw ``AF_PACKET`` socket (root or ``CAP_NET_RAW``; no tcpdump needed) and
  writes them as a standard pcap file, so what a run puts on the wire can be
  searched byte by byte.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from .endpoint import identity
from .wire import pack

__all__ = ["hostile_clients", "LoopbackCapture", "can_capture", "tcp_streams"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # on lo every packet is seen going out and coming in: keep one copy


def hostile_clients(address: str, count: int, *, claim=0, server_key: bytes | None = None,
                    batch: int = 50, timeout_s: float = 10.0) -> dict:
    """Send ``count`` well-formed ``model`` messages claiming to come from node
    ``claim`` to the receiving socket at ``address``, one connection each.

    With ``server_key`` (the node's public key) the client speaks CURVE with a
    fresh key pair of its own, which no allow-list holds; without it the
    client speaks plaintext.  ``batch`` connections are open at a time; each
    is closed once its handshake has an outcome (the client's own socket
    monitor says so).  Returns ``{"sent", "accepted", "refused", "undecided"}``:
    handshakes the node completed, refused, or left open past ``timeout_s``.
    """
    ctx = zmq.Context()
    tally = {"sent": 0, "accepted": 0, "refused": 0, "undecided": 0}
    try:
        while tally["sent"] < count:
            watch = {}
            for _ in range(min(batch, count - tally["sent"])):
                sock = ctx.socket(zmq.DEALER)
                if server_key is not None:
                    public, secret = zmq.curve_keypair()
                    sock.curve_secretkey, sock.curve_publickey = secret, public
                    sock.curve_serverkey = server_key
                sock.setsockopt(zmq.ROUTING_ID, identity(claim))
                sock.setsockopt(zmq.SNDTIMEO, 1000)
                where = f"inproc://p2pfl-hostile-{tally['sent']}"
                sock.monitor(where, OUTCOMES)
                monitor = ctx.socket(zmq.PAIR)
                monitor.connect(where)
                watch[monitor] = sock
                sock.connect(address)
                sock.send_multipart(pack("model", claim, 1, tally["sent"],
                                         frames=[b"\x00" * 64]))
                tally["sent"] += 1
            _await_outcomes(watch, tally, time.monotonic() + timeout_s)
    finally:
        ctx.destroy(linger=0)
    return tally


#: Client-side monitor events that settle a handshake one way or the other.
OUTCOMES = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_DISCONNECTED)


def _await_outcomes(watch: dict, tally: dict, deadline: float) -> None:
    poller = zmq.Poller()
    for monitor in watch:
        poller.register(monitor, zmq.POLLIN)
    while watch and time.monotonic() < deadline:
        for monitor, _ in poller.poll(100):
            event = recv_monitor_message(monitor)["event"]
            ok = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
            tally["accepted" if ok else "refused"] += 1
            sock = watch.pop(monitor)
            poller.unregister(monitor)
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
    tally["undecided"] += len(watch)
    for monitor, sock in watch.items():
        monitor.close(linger=0)
        sock.close(linger=0)


def can_capture() -> str | None:
    """``None`` if a loopback capture can be opened here, else why not."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except (OSError, AttributeError) as exc:
        return f"no raw packet socket ({exc}); needs Linux and root or CAP_NET_RAW"
    return None


SEQ_SPACE = 1 << 32  # TCP sequence numbers count bytes modulo this


def _unwrapped(offset: int, furthest: int) -> int:
    """The stream position, nearest to ``furthest``, whose remainder modulo
    :data:`SEQ_SPACE` is ``offset``."""
    ahead = (offset - furthest) % SEQ_SPACE
    return furthest + (ahead - SEQ_SPACE if ahead >= SEQ_SPACE // 2 else ahead)


def _carry(ranges: list, start: int, end: int) -> int:
    """Add the bytes ``start`` to ``end - 1`` to ``ranges`` (sorted, disjoint ``[first,
    end]`` pairs, ``end`` excluded; merged in place); return how many of them were new."""
    covered, merged, out = 0, [start, end], []
    for s, e in ranges:
        if e < merged[0] or s > merged[1]:  # apart (touching ranges merge)
            out.append([s, e])
            continue
        covered += max(0, min(e, end) - max(s, start))
        merged = [min(s, merged[0]), max(e, merged[1])]
    out.append(merged)
    ranges[:] = sorted(out)
    return (end - start) - covered


class LoopbackCapture:
    """Record every packet on ``lo`` while the ``with`` block runs."""

    def __init__(self) -> None:
        self.packets: list = []  # (timestamp, frame bytes)
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self._thread = threading.Thread(target=self._run, daemon=True, name="p2pfl-capture")

    def __enter__(self) -> "LoopbackCapture":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, where = self._sock.recvfrom(1 << 17)
            except socket.timeout:
                continue
            except OSError:
                return
            if where[2] != PACKET_OUTGOING:
                self.packets.append((time.time(), frame))

    def tcp_payloads(self, ports=None) -> list:
        """The TCP payloads of IPv4 packets (to or from one of ``ports``, if given)."""
        return [payload for _, _, payload in self.tcp_segments(ports)]

    def tcp_segments(self, ports=None) -> list:
        """``(source port, destination port, payload)`` of each IPv4 TCP packet with a
        payload (to or from one of ``ports``, if given)."""
        return [seg[:3] for seg in _segments([f for _, f in self.packets], ports)]

    def tcp_streams(self, ports=None) -> dict:
        """:func:`tcp_streams` of the packets captured so far."""
        return tcp_streams([frame for _, frame in self.packets], ports)

    def write_pcap(self, path: str) -> None:
        """The capture as a pcap file (link type Ethernet), readable by tcpdump and Wireshark."""
        with open(path, "wb") as fh:
            fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 1 << 18, 1))
            for ts, frame in self.packets:
                sec = int(ts)
                fh.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
                fh.write(frame)


def tcp_streams(frames: list, ports=None) -> dict:
    """Per direction of each connection in Ethernet ``frames``, ``"sport>dport"``:
    ``[payload, resent]``, the bytes of its byte stream and the bytes TCP sent again.

    A segment's bytes that an earlier segment of the same direction carried (by
    TCP sequence number) are resent: a loss, or a tail-loss probe fired before
    the receiver's ACK came, as on a loaded machine.  The application wrote
    them once, so ``payload`` counts them once.  A direction's stream starts
    after its SYN (or at its first data byte, when the SYN was not captured), and
    the bytes carried so far are kept as ranges: a hole filled later is new
    data, not a resend.  A new connection on the same two ports (its SYN) adds
    its stream to the same entry.  Sequence numbers wrap every 4 GiB: a segment
    is placed within 2 GiB of the stream's furthest byte so far, so a longer
    stream is counted whole.  Data on a SYN (TCP Fast Open) follows the SYN's own
    sequence number."""
    out: dict = {}
    streams: dict = {}  # direction -> [sequence number of byte 0, carried ranges, end]
    for sport, dport, payload, seq, syn in _segments(frames, ports, syns=True):
        key = f"{sport}>{dport}"
        if syn:  # a SYN takes one sequence number: the stream starts after it
            seq = (seq + 1) % SEQ_SPACE
            streams[key] = [seq, [], 0]
        stream = streams.setdefault(key, [seq, [], 0])
        if not payload:
            continue
        start = _unwrapped((seq - stream[0]) % SEQ_SPACE, stream[2])
        stream[2] = max(stream[2], start + len(payload))
        fresh = _carry(stream[1], start, start + len(payload))
        row = out.setdefault(key, [0, 0])
        row[0] += fresh
        row[1] += len(payload) - fresh
    return out


def _segments(frames: list, ports, syns: bool = False) -> list:
    """``(sport, dport, payload, seq, syn)`` of each IPv4 TCP packet with a payload,
    and with ``syns`` of each SYN as well."""
    out = []
    for frame in frames:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ip = 14
        ihl = (frame[ip] & 0x0F) * 4
        tcp = ip + ihl
        sport, dport = struct.unpack_from("!HH", frame, tcp)
        if ports is not None and sport not in ports and dport not in ports:
            continue
        total = struct.unpack_from("!H", frame, ip + 2)[0]
        data = tcp + (frame[tcp + 12] >> 4) * 4
        syn = bool(frame[tcp + 13] & 0x02)
        if ip + total > data or (syns and syn):
            seq = struct.unpack_from("!I", frame, tcp + 4)[0]
            out.append((sport, dport, frame[data:ip + total], seq, syn))
    return out
