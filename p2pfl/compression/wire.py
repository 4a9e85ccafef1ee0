"""Binary building blocks of a codec blob: varints, a bounded reader, bit packing.

Every blob starts with a tiny header (see :func:`write_header`)::

    magic    1 byte   0xA1 (format version 1)
    nstages  1 byte   followed by one wire id byte per explicit stage
    dtype    1 byte   the source dtype code (DTYPE_CODES)
    ndim     1 byte   0..MAX_NDIM, followed by one LEB128 varint per dimension

A 1-D float32 tensor of 10^6 entries under ``none`` costs 8 header bytes.
Inside a per-tensor message (:mod:`~p2pfl.compression.tensorwise`), whose
codec and tensor shapes both ends know, the header is the one byte 0xA2
("implicit"): float32, the codec's stages, the expected shape.  A bias of a
small CNN coded by ``stc:0.01+golomb`` is about 24 bytes, so the 7 to 9
bytes of an explicit header were a third of it.
Decoding never trusts a declared size: :class:`Reader` checks every length
against the bytes that are actually there, and shapes against ``MAX_NUMEL``,
before anything is allocated.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import torch

from .errors import CodecError

__all__ = ["MAGIC", "MAGIC_IMPLICIT", "MAX_NUMEL", "MAX_NDIM", "Writer", "Reader", "write_header",
           "read_header", "pack_uint", "unpack_uint", "packed_nbytes", "as_buffer"]

MAGIC = 0xA1
MAGIC_IMPLICIT = 0xA2
MAX_NUMEL = 1 << 28
MAX_NDIM = 8
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
DTYPES = {v: k for k, v in DTYPE_CODES.items()}
PACK_WIDTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32)
_BIG_PART = 1 << 16  # parts at least this large travel as their own frame, uncopied


def as_buffer(frames) -> memoryview:
    """One contiguous read-only view of a blob given as bytes or a list of frames."""
    if isinstance(frames, (bytes, bytearray, memoryview)):
        return memoryview(frames).cast("B")
    try:
        parts = [memoryview(f).cast("B") for f in frames]
    except TypeError as exc:
        raise CodecError(f"a blob is bytes or a list of byte frames, not {type(frames)!r}") from exc
    return parts[0] if len(parts) == 1 else memoryview(b"".join(parts))


class Writer:
    """Collects the parts of a blob; large parts stay separate, zero-copy frames."""

    def __init__(self) -> None:
        self.parts: list = []
        self._small = bytearray()

    def byte(self, v: int) -> None:
        self._small.append(v)

    def varint(self, v: int) -> None:
        if v < 0:
            raise ValueError("varints are unsigned")
        while True:
            low, v = v & 0x7F, v >> 7
            self._small.append(low | (0x80 if v else 0))
            if not v:
                return

    def f64(self, v: float) -> None:
        self._small += struct.pack("<d", v)

    def f32(self, v: float) -> None:
        self._small += struct.pack("<f", v)

    def raw(self, data) -> None:
        view = memoryview(data).cast("B")
        if view.nbytes >= _BIG_PART:
            self._flush()
            self.parts.append(view)
        else:
            self._small += view

    def section(self, data) -> None:
        """A length-prefixed byte section."""
        self.varint(memoryview(data).nbytes)
        self.raw(data)

    def _flush(self) -> None:
        if self._small:
            self.parts.append(bytes(self._small))
            self._small = bytearray()

    def frames(self) -> list:
        self._flush()
        return self.parts

    def tobytes(self) -> bytes:
        return b"".join(self.frames())


class Reader:
    """A cursor over a blob that raises CodecError instead of reading past the end."""

    def __init__(self, buf) -> None:
        self.buf = memoryview(buf).cast("B")
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining:
            raise CodecError(f"blob truncated: need {n} bytes, {self.remaining} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, limit: int, what: str = "value") -> int:
        value = shift = 0
        for _ in range(10):
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if value > limit:
                    raise CodecError(f"declared {what} {value} exceeds the limit {limit}")
                return value
        raise CodecError(f"malformed varint for {what}")

    def f64(self) -> float:
        return self._finite(struct.unpack("<d", self.take(8))[0])

    def f32(self) -> float:
        return self._finite(struct.unpack("<f", self.take(4))[0])

    @staticmethod
    def _finite(v: float) -> float:
        if not np.isfinite(v):
            raise CodecError("non-finite scale in blob")
        return v

    def section(self, limit: int, what: str = "section") -> memoryview:
        return self.take(self.varint(min(limit, self.remaining), what))

    def done(self) -> None:
        if self.remaining:
            raise CodecError(f"{self.remaining} trailing bytes after the blob")


def write_header(w: Writer, ids: bytes, dtype: torch.dtype, shape: tuple,
                 implicit: bool = False) -> None:
    """The blob header; ``implicit``: the receiver knows the stages and the shape."""
    if len(shape) > MAX_NDIM:
        raise CodecError(f"tensors of more than {MAX_NDIM} dimensions are not supported")
    if implicit:
        w.byte(MAGIC_IMPLICIT)
        return
    w.byte(MAGIC)
    w.byte(len(ids))
    w.raw(ids)
    w.byte(DTYPE_CODES.get(dtype, 0))
    w.byte(len(shape))
    for d in shape:
        w.varint(int(d))


def read_header(r: Reader, ids: bytes, max_numel: int = MAX_NUMEL, expected=None):
    """Validate the header against the codec's stage ids; returns (dtype, shape, numel).

    ``expected``: the shape the container knows (per-tensor messages), which an
    implicit header stands for and an explicit one must declare; without it an
    implicit header is refused."""
    magic = r.byte()
    if magic == MAGIC_IMPLICIT and expected is not None:
        shape = tuple(expected)
        numel = math.prod(shape)
        if len(shape) > MAX_NDIM or numel > max_numel:
            raise CodecError(f"expected shape {shape} exceeds the limits")
        return torch.float32, shape, numel
    if magic != MAGIC:
        raise CodecError("not a p2pfl codec blob (bad magic byte)" if magic != MAGIC_IMPLICIT
                         else "an implicit blob header outside a per-tensor message")
    got = bytes(r.take(r.byte()))
    if got != ids:
        raise CodecError(f"blob made by stages {list(got)}, this codec has {list(ids)}")
    code = r.byte()
    if code not in DTYPES:
        raise CodecError(f"unknown dtype code {code}")
    ndim = r.byte()
    if ndim > MAX_NDIM:
        raise CodecError(f"declared ndim {ndim} exceeds {MAX_NDIM}")
    shape = tuple(r.varint(max_numel, "dimension") for _ in range(ndim))
    if expected is not None and shape != tuple(expected):  # before the body is read
        raise CodecError(f"a blob of shape {shape} where {tuple(expected)} is expected")
    numel = 1
    for d in shape:
        numel *= d
    if numel > max_numel:
        raise CodecError(f"declared numel {numel} exceeds the limit {max_numel}")
    return DTYPES[code], shape, numel


def packed_nbytes(count: int, width: int) -> int:
    return (count * width + 7) // 8


def pack_uint(u: np.ndarray, width: int) -> bytes:
    """Pack unsigned integers < 2**width, MSB first; width in PACK_WIDTHS."""
    if width == 0:
        return b""
    if width in (16, 32):
        return u.astype(f"<u{width // 8}").tobytes()
    if width == 8:
        return u.astype(np.uint8).tobytes()
    bits = np.unpackbits(u.astype(np.uint8)[:, None], axis=1)[:, 8 - width:]
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_uint(buf, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; returns int64. The caller checked len(buf)."""
    if width == 0:
        return np.zeros(count, dtype=np.int64)
    if width in (8, 16, 32):
        return np.frombuffer(buf, dtype=f"<u{width // 8}", count=count).astype(np.int64)
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=count * width)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, 8 - width:] = bits.reshape(count, width)
    return np.packbits(padded, axis=1)[:, 0].astype(np.int64)
