"""The wire format: one msgpack header frame followed by raw binary frames.

A message on the wire is a list of ZeroMQ frames::

    [ header (msgpack array) | frame 0 | frame 1 | ... ]

The header is a msgpack array of positional fields, since it travels with every
message (a compressed model update can be a couple of hundred bytes, and the
one-letter keys of protocol version 1's map were 16 of them)::

    0  v   protocol version (2)        5  c   codec that produced the frames
    1  k   message kind                6  l   byte length of each frame
    2  s   sender id                   7  m   small map of plain values, or nil
    3  r   round                       8  sh  shapes of raw tensor frames
    4  n   per-sender sequence no.     9  dt  dtypes of raw tensor frames

Fields 0-6 are always there; ``m`` only when it or ``sh``/``dt`` are, and
``sh``/``dt`` (both or neither) only for raw tensors, so a header has 7, 8 or
10 fields.

Codec-encoded frames need no ``sh``/``dt``: the codec's blobs carry their
shapes, or the receiver knows them (per-tensor messages). ``c`` is a string, or
the index of the codec in a table of names both ends were given (:func:`pack`'s
``codec_ids``, :func:`unpack`'s ``codec_names``): a run's codec names are known
to every node before its first round, and a name such as
``topk:0.05+quant:0.002+cabac`` is a tenth of a small compressed message.

Nothing here unpickles anything: msgpack decodes only maps, lists, strings,
numbers and bytes, and tensor frames are interpreted as raw little-endian
arrays.  :func:`unpack` validates the header completely before it looks at a
frame; any failure raises :class:`ProtocolError`, which the receiver turns into
a counted drop.  This module knows nothing of torch or of learning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import msgpack
import numpy as np

__all__ = [
    "PROTOCOL_VERSION",
    "KINDS",
    "DTYPES",
    "Limits",
    "Message",
    "ProtocolError",
    "pack",
    "unpack",
    "tensor_frames",
    "frames_to_arrays",
    "frame_nbytes",
]

PROTOCOL_VERSION = 2
#: The longest string a sender may be named by (node ids are integers; the launcher is
#: "launcher"): a routing id is derived, and cached, from every sender named.
MAX_NAME = 64

#: Every message kind the protocol knows.  Anything else is dropped.
KINDS = frozenset(
    {
        "join",  # node -> launcher: I exist, here is my address
        "hello",  # node -> neighbour: handshake, proves the link works
        "config",  # launcher -> node: run configuration and neighbours
        "ready",  # node -> launcher: connected to all neighbours
        "start",  # launcher -> nodes: begin round 1
        "model",  # node -> neighbour: a (possibly encoded) model or public-copy update
        "resync",  # node -> neighbour: send me your full public copy
        "leave",  # node -> neighbour: I am going offline; do not wait for me
        "pull",  # node -> neighbour: I was away; send me your current model
        "catchup",  # neighbour -> node: my current model, and the round I am at
        "update",  # worker <-> coordinator: a model update
        "softlabels",  # worker <-> coordinator: soft labels on the public set
        "control",  # coordinator -> worker: round instructions
        "metrics",  # node -> launcher: one round's record
        "heartbeat",  # launcher -> node: I am alive
        "error",  # node -> launcher: I failed, and why
        "bye",  # node -> launcher: finished, with final counters
        "weights",  # node -> launcher: its final model's tensors (--save-models)
        "stop",  # launcher -> node: shut down now (a coordinator: finish the run)
        "peer",  # launcher -> node: a restarted neighbour's new address, or its death
    }
)

#: dtypes a raw tensor frame may declare (little-endian, C order).
DTYPES = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64"})
_ITEMSIZE = {name: np.dtype(name).itemsize for name in DTYPES}

_FIELDS = ("v", "k", "s", "r", "n", "c", "l", "m", "sh", "dt")  # names for error messages
_SIZES = (7, 8, 10)  # required fields; with m; with m, sh and dt


class ProtocolError(ValueError):
    """A message that does not follow the wire format; the receiver drops it."""


@dataclass(frozen=True)
class Limits:
    """Size limits checked before any frame is touched or any array allocated."""

    max_header_bytes: int = 1 << 16
    max_frames: int = 4096
    max_frame_bytes: int = 1 << 30
    max_tensor_elems: int = 1 << 28
    max_ndim: int = 8
    max_meta_bytes: int = 1 << 16


DEFAULT_LIMITS = Limits()


@dataclass
class Message:
    """A validated message: header fields plus the raw frames (memoryviews)."""

    kind: str
    src: Any
    round: int
    seq: int
    codec: str = "none"
    shapes: list = field(default_factory=list)
    dtypes: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Total bytes of the message as sent: header plus every frame."""
        return self.header_bytes + sum(frame_nbytes(f) for f in self.frames)

    header_bytes: int = 0
    channel: str = "data"  # set by the receiving endpoint: "data" or "control"
    route: bytes = b""  # set by the receiving endpoint: the connection's routing id


def frame_nbytes(frame) -> int:
    """Length in bytes of a frame given as bytes, bytearray, memoryview or array."""
    if isinstance(frame, memoryview):
        return frame.nbytes
    if isinstance(frame, np.ndarray):
        return frame.nbytes
    return len(frame)


def pack(
    kind: str,
    src,
    round: int = 0,
    seq: int = 0,
    *,
    frames: Sequence = (),
    codec: str = "none",
    shapes: Sequence = (),
    dtypes: Sequence = (),
    meta: dict | None = None,
    codec_ids: dict | None = None,
) -> list:
    """Build the frames of one message: ``[header, *frames]``.

    Frames are passed through untouched (zero-copy when they are memoryviews
    or contiguous numpy arrays); only their lengths go into the header.
    ``codec_ids`` maps codec names to their index in the table the receiver
    holds; a codec in it is sent as that index.
    """
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    frames = [f if not isinstance(f, np.ndarray) else memoryview(f).cast("B") for f in frames]
    header = [PROTOCOL_VERSION, kind, src, int(round), int(seq),
              codec if codec_ids is None else codec_ids.get(codec, codec),
              [frame_nbytes(f) for f in frames]]
    if meta or shapes:
        header.append(meta or None)
    if shapes:
        header += [[list(map(int, s)) for s in shapes], list(dtypes)]
    return [msgpack.packb(header, use_bin_type=True)] + frames


def _unpack_header(raw, limits: Limits) -> list:
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds {limits.max_header_bytes}")
    try:
        # unpackb bounds every string/bin/array/map by the buffer's own length
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if type(header) is not list:
        raise ProtocolError("header is not an array")
    version = header[0] if header else None
    if type(version) is not int or version != PROTOCOL_VERSION:  # msgpack's bool is not an int
        raise ProtocolError(f"protocol version {version!r} is not {PROTOCOL_VERSION}")
    if len(header) not in _SIZES:
        raise ProtocolError(f"header of {len(header)} fields, not 7, 8 or 10")
    return header


def _check_int(header: list, i: int, lo: int, hi: int) -> int:
    value = header[i]
    if type(value) is not int or not lo <= value <= hi:  # msgpack's bool is not an int here
        raise ProtocolError(f"header field {_FIELDS[i]!r} is not an integer in [{lo}, {hi}]")
    return value


def _check_tensor_specs(shapes, dtypes, lengths, limits: Limits) -> None:
    if not isinstance(shapes, list) or not isinstance(dtypes, list):
        raise ProtocolError("shapes and dtypes must be lists")
    if len(shapes) != len(dtypes) or len(shapes) > len(lengths):
        raise ProtocolError("shapes, dtypes and frames do not correspond")
    for shape, dtype, length in zip(shapes, dtypes, lengths):
        itemsize = _ITEMSIZE.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise ProtocolError(f"dtype {dtype!r} is not allowed")
        if type(shape) is not list or len(shape) > limits.max_ndim:
            raise ProtocolError("a shape is not a short list of non-negative integers")
        for d in shape:
            if type(d) is not int or d < 0:
                raise ProtocolError("a shape is not a short list of non-negative integers")
        numel = math.prod(shape)  # exact: the dimensions are few and bounded above
        if numel > limits.max_tensor_elems:
            raise ProtocolError(f"declared tensor of {numel} elements exceeds the limit")
        if numel * itemsize != length:
            raise ProtocolError("a frame's length does not match its shape and dtype")


def unpack(parts: Sequence, limits: Limits = DEFAULT_LIMITS, codec_names: Sequence = ()
           ) -> Message:
    """Validate and decode one message; raise :class:`ProtocolError` if it is bad.

    ``parts`` are the received frames (``zmq.Frame``, bytes or memoryviews);
    ``codec_names`` the table a codec index in the header refers to.
    The header is checked completely (version, kind, field types, frame count
    and lengths, declared shapes against the size limits) before any payload
    frame is looked at.
    """
    if not parts:
        raise ProtocolError("empty message")
    if len(parts) - 1 > limits.max_frames:
        raise ProtocolError(f"{len(parts) - 1} frames exceed the limit of {limits.max_frames}")
    raw = _buffer(parts[0])
    header = _unpack_header(raw, limits)
    _, kind, src, _, _, codec, lengths = header[:7]  # the version was checked
    if not isinstance(kind, str) or kind not in KINDS:  # a list is unhashable
        raise ProtocolError(f"unknown message kind {kind!r}")
    if type(src) is not int and (type(src) is not str or len(src) > MAX_NAME):  # nor a bool
        raise ProtocolError(f"sender is not an integer or a string of at most {MAX_NAME}")
    rnd = _check_int(header, 3, -1, 1 << 40)
    seq = _check_int(header, 4, 0, 1 << 62)
    if type(codec) is int:
        if not 0 <= codec < len(codec_names):
            raise ProtocolError(f"codec number {codec} is not in this node's table of "
                                f"{len(codec_names)}")
        codec = codec_names[codec]
    elif not isinstance(codec, str) or len(codec) > 256:
        raise ProtocolError("codec is not a short string or a table index")
    frames = [_buffer(p) for p in parts[1:]]
    if not isinstance(lengths, list) or len(lengths) != len(frames):
        raise ProtocolError("declared frame count does not match the frames received")
    for declared, frame in zip(lengths, frames):
        if type(declared) is not int or declared != frame.nbytes:
            raise ProtocolError("declared frame length does not match the frame received")
        if declared > limits.max_frame_bytes:
            raise ProtocolError("a frame exceeds the size limit")
    shapes, dtypes = header[8:] if len(header) == 10 else ([], [])
    _check_tensor_specs(shapes, dtypes, lengths, limits)
    meta = header[7] if len(header) > 7 and header[7] is not None else {}
    if not isinstance(meta, dict):
        raise ProtocolError("meta is not a map")
    return Message(
        kind=kind,
        src=src,
        round=rnd,
        seq=seq,
        codec=codec,
        shapes=shapes,
        dtypes=dtypes,
        meta=meta,
        frames=frames,
        header_bytes=raw.nbytes,
    )


def _buffer(part) -> memoryview:
    """A read-only byte view of a received frame, without copying it."""
    view = getattr(part, "buffer", None)  # zmq.Frame: a memoryview already
    if type(view) is not memoryview:
        view = memoryview(part)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def tensor_frames(arrays: Sequence[np.ndarray]) -> tuple[list, list, list]:
    """Raw frames, shapes and dtypes for a list of numpy arrays (zero-copy if contiguous)."""
    frames, shapes, dtypes = [], [], []
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.name not in DTYPES:
            raise ProtocolError(f"dtype {a.dtype.name} cannot be sent raw")
        frames.append(memoryview(a.reshape(-1)).cast("B"))
        shapes.append(list(a.shape))
        dtypes.append(a.dtype.name)
    return frames, shapes, dtypes


def frames_to_arrays(msg: Message) -> list[np.ndarray]:
    """View the raw tensor frames of a validated message as numpy arrays (no copy)."""
    return [
        np.frombuffer(frame, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        for frame, shape, dtype in zip(msg.frames, msg.shapes, msg.dtypes)
    ]
