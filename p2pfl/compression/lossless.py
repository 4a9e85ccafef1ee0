"""Lossless stages: general byte compressors on the serialised body, and CABAC
on the integer levels.

``deflate[:LEVEL]`` (zlib), ``bz2[:LEVEL]`` and ``lzma[:PRESET]`` (raw LZMA2, no
container) compress everything after the header; the blob stores the body's
raw length first, and decompression is bounded by it (``max_length``), so a
decompression bomb stops at the declared size, which is itself checked
against a limit derived from the tensor's numel.

``cabac`` entropy-codes integer levels with DeepCABAC's context-adaptive
binary arithmetic coder (ALGORITHMS.md § DeepCABAC), implemented in
``p2pfl.compression.cabac`` and imported lazily.  Without a position stage a
sparse intermediate is densified first, so CABAC's significance flags code
the support (as DeepCABAC does).
"""
from __future__ import annotations

import bz2
import lzma
import zlib

import numpy as np

from ..errors import ConfigError
from .base import Stage, int_arg
from .errors import CodecError

__all__ = ["Deflate", "Bz2", "Lzma", "Cabac"]


def _drain(dec, data, raw_len: int) -> bytes:
    """Decompress with ``dec`` to at most raw_len bytes; insist on exactly that, then EOF."""
    if raw_len < 1:  # max_length=0 would mean "unbounded" to zlib
        raise CodecError("declared body length must be positive")
    try:
        out = dec.decompress(bytes(data), raw_len)
        if len(out) == raw_len and not dec.eof:
            # the end marker or checksum may still be pending; allow no more output
            tail = getattr(dec, "unconsumed_tail", b"")  # zlib keeps unread input here
            if dec.decompress(tail, 1):
                raise CodecError("compressed body longer than declared")
    except CodecError:
        raise
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        raise CodecError(f"corrupt compressed body: {exc}") from exc
    if len(out) != raw_len or not dec.eof or dec.unused_data:
        raise CodecError("compressed body does not match its declared length")
    return out


class _ByteCompressor(Stage):
    role = "lossless"
    level_range = (0, 9)
    default = 6

    def __init__(self, args, rng):
        super().__init__(args, rng)
        lo, hi = self.level_range
        self.level = int_arg(self, args[0], "LEVEL", lo, hi) if args else self.default


class Deflate(_ByteCompressor):
    """``deflate[:LEVEL]``: zlib (RFC 1950/1951)."""
    name, wire_id = "deflate", 48

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self.level)

    def decompress(self, data, raw_len: int) -> bytes:
        return _drain(zlib.decompressobj(), data, raw_len)


class Bz2(_ByteCompressor):
    """``bz2[:LEVEL]``: the Burrows–Wheeler compressor."""
    name, wire_id, level_range, default = "bz2", 49, (1, 9), 9

    def compress(self, data: bytes) -> bytes:
        return bz2.compress(data, self.level)

    def decompress(self, data, raw_len: int) -> bytes:
        return _drain(bz2.BZ2Decompressor(), data, raw_len)


class Lzma(_ByteCompressor):
    """``lzma[:PRESET]``: raw LZMA2 stream (no .xz container overhead)."""
    name, wire_id = "lzma", 50

    def _filters(self):
        return [{"id": lzma.FILTER_LZMA2, "preset": self.level}]

    def compress(self, data: bytes) -> bytes:
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=self._filters())

    def decompress(self, data, raw_len: int) -> bytes:
        # the decoder only needs the dictionary size; preset 9's is the largest
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9}]
        return _drain(lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters),
                      data, raw_len)


class Cabac(Stage):
    """``cabac``: DeepCABAC level coding (ALGORITHMS.md § DeepCABAC), via
    ``p2pfl.compression.cabac.encode_levels`` / ``decode_levels``.

    ``cabac:temporal`` conditions the contexts on the co-located levels of the
    previous message of the same stream (:mod:`~p2pfl.compression.temporal`); the
    stage then holds that state, and decoding needs the sender."""
    # 52 since CABAC format 2 (dual-rate contexts): a peer of format 1 (id 51) sees
    # another stage in the header and refuses the blob instead of misreading it
    name, wire_id, role = "cabac", 52, "lossless"
    codes_levels = True
    dependent = False  # set by the codec when its quantiser is dq (dq mode)

    def __init__(self, args, rng):
        super().__init__(args, rng)
        if args and args[0] != "temporal":
            raise ConfigError(f"cabac takes 'temporal' as its optional argument, got {args[0]!r}")
        self.temporal = None
        if args:
            from .temporal import TemporalState

            self.temporal = TemporalState()

    def reset(self) -> None:
        if self.temporal is not None:
            self.temporal.reset()

    def restart(self) -> None:
        """Next message with plain contexts (see :mod:`~p2pfl.compression.temporal`)."""
        if self.temporal is not None:
            self.temporal.restart()

    @staticmethod
    def _module():
        try:
            from . import cabac  # noqa: PLC0415 (lazy: optional, written separately)
        except ImportError as exc:
            raise CodecError("the cabac stage needs p2pfl.compression.cabac, "
                             f"which failed to import: {exc}") from exc
        return cabac

    def encode_levels(self, levels: np.ndarray) -> bytes:
        levels = np.ascontiguousarray(levels, np.int32)
        module, dependent = self._module(), self.dependent

        def coder(lv, reference=None):
            return module.encode_levels(lv, reference, dependent)

        if self.temporal is not None:
            return self.temporal.encode(levels, coder)
        return bytes(coder(levels))

    def decode_levels(self, data: bytes, count: int, sender=None) -> np.ndarray:
        if self.temporal is not None:
            return self.temporal.decode(data, count, self._decode, sender)
        return self._decode(data, count)

    def _decode(self, data: bytes, count: int, reference=None) -> np.ndarray:
        try:
            out = self._module().decode_levels(data, count, reference, self.dependent)
        except CodecError:
            raise
        except (ValueError, OverflowError, IndexError, MemoryError) as exc:
            raise CodecError(f"corrupt CABAC data: {exc}") from exc
        out = np.asarray(out)
        if out.shape != (count,):
            raise CodecError("CABAC decoder returned the wrong number of levels")
        return out
