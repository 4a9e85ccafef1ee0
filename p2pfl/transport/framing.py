"""What ZeroMQ puts on the wire around our bytes (ZMTP 3.1, RFC 37; CurveZMQ, RFC 26).

Pure arithmetic from frame sizes; checked against packet captures in the tests.

- A frame of n bytes travels as a flags byte, its size (1 byte if n <= 255,
  else 8) and the n bytes: 2 or 9 bytes of framing.
- With CURVE, each frame travels inside a MESSAGE command whose body is its
  name (1 + 7 bytes), a short nonce (8), the box's MAC (16), a flags byte and
  the n bytes, framed like any frame: 35 or 42 bytes of framing.
- A connection first exchanges two 64-byte greetings, then the mechanism's
  handshake: for NULL a READY command each way (metadata: Socket-Type and
  Identity); for CURVE HELLO, WELCOME, INITIATE (the client's metadata inside)
  and READY (the server's metadata inside).
"""

from __future__ import annotations

__all__ = ["frame_overhead", "wire_bytes", "setup_bytes"]

GREETING = 64
CURVE_MESSAGE = 1 + 7 + 8 + 16 + 1  # name, short nonce, MAC, flags
CURVE_HELLO, CURVE_WELCOME = 200, 168  # command bodies (RFC 26)
CURVE_INITIATE = 1 + 8 + 96 + 8 + 16 + 32 + 16 + 80  # name, cookie, nonce, box: MAC, key, vouch
CURVE_READY = 1 + 5 + 8 + 16  # name, nonce, MAC


def _framed(body: int) -> int:
    return body + (2 if body <= 255 else 9)


def frame_overhead(nbytes: int, curve: bool = False) -> int:
    """Bytes ZeroMQ adds to one frame of ``nbytes``."""
    if curve:
        return _framed(CURVE_MESSAGE + nbytes) - nbytes
    return _framed(nbytes) - nbytes


def wire_bytes(sizes, curve: bool = False) -> int:
    """Bytes one message of frames of ``sizes`` takes on the wire."""
    extra = CURVE_MESSAGE if curve else 0
    return sum(_framed(n + extra) for n in sizes)


def _metadata(socket_type: str, identity: bytes) -> int:
    """Socket-Type and Identity properties: name-size, name, value-size (4), value."""
    return (1 + 11 + 4 + len(socket_type)) + (1 + 8 + 4 + len(identity))


def setup_bytes(identity: bytes, curve: bool = False, client: str = "DEALER",
                server: str = "ROUTER") -> int:
    """Both directions of a connection's set-up, from a ``client`` socket with routing
    id ``identity`` to a ``server`` socket (which announces an empty identity)."""
    mine, theirs = _metadata(client, identity), _metadata(server, b"")
    if not curve:
        return 2 * GREETING + _framed(1 + 5 + mine) + _framed(1 + 5 + theirs)
    return (2 * GREETING + _framed(CURVE_HELLO) + _framed(CURVE_WELCOME)
            + _framed(CURVE_INITIATE + mine) + _framed(CURVE_READY + theirs))
