"""Soft labels on the wire: CFD's quantiser Q_b and the frame coders (pure functions).

ALGORITHMS.md, "Federated distillation FD and compressed FD": Q_b(p) rounds p·L,
L = 2^b − 1, to integers and repairs each row's sum to L by moving the largest
rounding errors (Q_1 is the one-hot argmax); delta coding sends only what changed
since the reference message.  The paper leaves the entropy coder open ("better
coding"); ``coder`` picks one:

* ``packed`` (the default): rows as packed bits (b = 1: the argmaxes as one
  base-C integer); a delta frame carries a bitmap of the changed rows.
* ``cabac``: the levels, row-major, through our CABAC coder (plain contexts); a
  delta frame carries the bitmap and codes the changed rows only.  Per message
  the smallest of the packed and CABAC frames, full or delta, is sent.
* ``cabac:temporal``: as ``cabac``, plus one more candidate when there is a
  reference: every level coded with CABAC's temporal contexts (each level's
  contexts conditioned on the co-located level of the reference, the previous
  labels of the same stream), and no bitmap.  Without a reference (the first
  message, or after a gap) only plain frames are possible, and the flag says so.

Frame: one flag byte, then 0: packed rows; 1: bitmap + packed changed rows;
2: CABAC levels; 3: bitmap + CABAC levels of the changed rows; 4: CABAC levels
with temporal contexts against the reference.  A receiver decodes any flag; what
it cannot (a delta without its reference, levels out of range, rows that do not
sum to L) is a ``ValueError``, so the message is dropped and counted.
"""

from __future__ import annotations

import math

import numpy as np

from ..compression.cabac import decode_levels, encode_levels
from .base import Packet
from .options import FD_CODERS as CODERS

__all__ = ["CODERS", "quantise", "dequantise", "encode_labels", "decode_labels", "pack_rows",
           "unpack_rows", "label_packet", "read_label_packet"]

PACKED, PACKED_DELTA, CABAC, CABAC_DELTA, TEMPORAL = range(5)


def quantise(probs: np.ndarray, bits: int) -> np.ndarray:
    """Q_b: integer levels (uint8, rows summing to 2^b − 1) nearest to ``probs`` in L1."""
    probs = np.asarray(probs, dtype=np.float64)
    L = (1 << bits) - 1
    if bits == 1:
        out = np.zeros(probs.shape, dtype=np.uint8)
        out[np.arange(len(probs)), probs.argmax(1)] = 1
        return out
    scaled = probs * L
    levels = np.rint(scaled).astype(np.int64)
    err = scaled - levels  # > 0: rounded down
    short = L - levels.sum(1)  # > 0: add to the most rounded-down entries
    order_up = np.argsort(-err, axis=1, kind="stable")
    order_down = np.argsort(err, axis=1, kind="stable")
    rank_up = np.argsort(order_up, axis=1)
    rank_down = np.argsort(order_down, axis=1)
    levels += (rank_up < np.maximum(short, 0)[:, None]).astype(np.int64)
    levels -= ((rank_down < np.maximum(-short, 0)[:, None]) & (levels > 0)).astype(np.int64)
    return np.clip(levels, 0, L).astype(np.uint8)


def dequantise(levels: np.ndarray, bits: int) -> np.ndarray:
    """Levels back to probabilities (float32)."""
    return (np.asarray(levels, dtype=np.float32) / ((1 << bits) - 1)).astype(np.float32)


def _chunk(c: int) -> int:
    """Base-c digits per int64 chunk: c**k < 2**63 (one class: any k)."""
    return max(1, int(63 // math.log2(c))) if c > 1 else 63


def _digits_to_int(idx: np.ndarray, c: int) -> int:
    """Σ idx_i c^i as one integer: numpy packs int64 chunks, Python joins the chunks."""
    k = _chunk(c)
    pad = np.zeros(-len(idx) % k, dtype=np.int64)
    d = np.concatenate([idx.astype(np.int64), pad]).reshape(-1, k)
    chunks = d @ (c ** np.arange(k, dtype=np.int64))
    value, base = 0, c ** k
    for ch in chunks[::-1].tolist():
        value = value * base + ch
    return value


def _int_to_digits(value: int, m: int, c: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_digits_to_int` for m digits; also returns what is left over."""
    k = _chunk(c)
    base, chunks = c ** k, []
    for _ in range(-(-m // k)):
        value, ch = divmod(value, base)
        chunks.append(ch)
    ch = np.array(chunks, dtype=np.int64)[:, None]
    digits = (ch // (c ** np.arange(k, dtype=np.int64))) % c
    rest = digits.reshape(-1)[m:]
    return digits.reshape(-1)[:m], value + int(rest.any())


def pack_rows(levels: np.ndarray, bits: int) -> bytes:
    """Rows of levels as bytes: b = 1 as one base-C integer of argmaxes, else b bits per entry."""
    m, c = levels.shape
    if m == 0:
        return b""
    if bits == 1:
        value = _digits_to_int(levels.argmax(1), c)
        return value.to_bytes(math.ceil(m * math.log2(c) / 8) if c > 1 else 0, "little")
    planes = ((levels.reshape(-1, 1).astype(np.uint8) >> np.arange(bits, dtype=np.uint8)) & 1)
    return np.packbits(planes.reshape(-1)).tobytes()


def unpack_rows(data: bytes, m: int, c: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_rows`; ValueError on a wrong size."""
    if bits == 1:
        need = math.ceil(m * math.log2(c) / 8) if (m and c > 1) else 0
        if len(data) != need:
            raise ValueError(f"{len(data)} bytes of argmaxes, expected {need}")
        idx, left = _int_to_digits(int.from_bytes(data, "little"), m, c)
        if left:
            raise ValueError("argmax indices out of range")
        out = np.zeros((m, c), dtype=np.uint8)
        out[np.arange(m), idx] = 1
        return out
    need = math.ceil(m * c * bits / 8)
    if len(data) != need:
        raise ValueError(f"{len(data)} bytes of levels, expected {need}")
    bitsarr = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:m * c * bits]
    planes = bitsarr.reshape(m * c, bits).astype(np.uint8)
    levels = (planes << np.arange(bits, dtype=np.uint8)).sum(1).astype(np.uint8)
    levels = levels.reshape(m, c)
    if m and (levels.astype(np.int64).sum(1) != (1 << bits) - 1).any():
        raise ValueError("soft-label rows do not sum to 2^b - 1")
    return levels


def _cabac_rows(levels: np.ndarray) -> bytes:
    return encode_levels(levels.reshape(-1))


def _uncabac_rows(data, m: int, c: int, bits: int, reference=None) -> np.ndarray:
    """CABAC levels back to an (m, c) uint8 matrix; ValueError if they are not Q_b rows."""
    ref = None if reference is None else reference.reshape(-1)
    flat = decode_levels(data, m * c, ref)
    L = (1 << bits) - 1
    if flat.size and (flat.min() < 0 or flat.max() > L):
        raise ValueError(f"soft-label levels outside [0, {L}]")
    levels = flat.reshape(m, c)
    if m and (levels.sum(1) != L).any():
        raise ValueError("soft-label rows do not sum to 2^b - 1")
    return levels.astype(np.uint8)


def _delta_frame(flag: int, levels: np.ndarray, previous: np.ndarray, bits: int) -> bytes:
    changed = (levels != previous).any(1)
    rows = pack_rows(levels[changed], bits) if flag == PACKED_DELTA else _cabac_rows(
        levels[changed])
    return bytes([flag]) + np.packbits(changed).tobytes() + rows


def encode_labels(levels: np.ndarray, bits: int, previous: np.ndarray | None = None,
                  coder: str = "packed") -> bytes:
    """One frame of Q_b levels: flag byte, then as the module docstring says.
    ``previous``: the reference (delta coding), or None for a full frame.

    ``packed`` follows the paper: a delta frame whenever there is a reference.
    The CABAC coders decide per message, as a video coder chooses between intra
    and inter frames: they send the smallest of the frames they may use (full or
    delta, packed or CABAC, and with ``cabac:temporal`` the temporal frame)."""
    if coder not in CODERS:
        raise ValueError(f"unknown soft-label coder {coder!r}; one of {', '.join(CODERS)}")
    if coder == "packed":
        if previous is None:
            return bytes([PACKED]) + pack_rows(levels, bits)
        return _delta_frame(PACKED_DELTA, levels, previous, bits)
    frames = [bytes([PACKED]) + pack_rows(levels, bits), bytes([CABAC]) + _cabac_rows(levels)]
    if previous is not None:
        frames += [_delta_frame(flag, levels, previous, bits)
                   for flag in (PACKED_DELTA, CABAC_DELTA)]
        if coder == "cabac:temporal":
            frames.append(bytes([TEMPORAL]) + encode_levels(levels.reshape(-1),
                                                            previous.reshape(-1)))
    return min(frames, key=len)


def decode_labels(data: bytes, m: int, c: int, bits: int,
                  previous: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`encode_labels` (any coder); ``previous`` is needed for a delta frame."""
    data = bytes(data)
    if not data or data[0] > TEMPORAL:
        raise ValueError("bad soft-label frame flag")
    flag, body = data[0], data[1:]
    if flag == PACKED:
        return unpack_rows(body, m, c, bits)
    if flag == CABAC:
        return _uncabac_rows(body, m, c, bits)
    if previous is None or previous.shape != (m, c):
        raise ValueError("delta-coded soft labels without the reference")
    if flag == TEMPORAL:
        return _uncabac_rows(body, m, c, bits, previous)
    nmap = (m + 7) // 8
    if len(body) < nmap:
        raise ValueError("soft-label delta frame shorter than its bitmap")
    changed = np.unpackbits(np.frombuffer(body[:nmap], dtype=np.uint8))[:m].astype(bool)
    k = int(changed.sum())
    out = previous.copy()
    rows = body[nmap:]
    out[changed] = (unpack_rows(rows, k, c, bits) if flag == PACKED_DELTA
                    else _uncabac_rows(rows, k, c, bits))
    return out


def label_packet(labels: np.ndarray, bits: int, previous=None, meta=None,
                 coder: str = "packed") -> Packet:
    """float32 rows (bits 0) as a raw tensor frame, else the quantised frame."""
    if bits == 0:
        arr = np.ascontiguousarray(labels, dtype=np.float32)
        return Packet("none", [memoryview(arr.reshape(-1)).cast("B")], [list(arr.shape)],
                      ["float32"], dict(meta or {}))
    return Packet(f"softlabels:{bits}", [encode_labels(labels, bits, previous, coder)],
                  meta=dict(meta or {}))


def read_label_packet(packet: Packet, m: int, c: int, bits: int, previous=None) -> np.ndarray:
    if bits == 0:
        if packet.codec != "none" or packet.dtypes != ["float32"] or packet.shapes != [[m, c]]:
            raise ValueError("expected float32 soft labels of the public set's shape")
        return np.frombuffer(packet.frames[0], dtype="<f4").reshape(m, c).copy()
    if packet.codec != f"softlabels:{bits}" or len(packet.frames) != 1:
        raise ValueError(f"expected one softlabels:{bits} frame")
    return decode_labels(packet.frames[0], m, c, bits, previous)
