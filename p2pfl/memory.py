"""Keep large freed blocks in the process heap instead of returning them to the OS.

glibc serves every allocation above its mmap threshold (at most 32 MiB by its
dynamic rule) with a fresh ``mmap`` and returns it on ``free``.  A node that
receives, decodes and mixes models of tens of MB then pays a page fault for
every 4 KiB of each new buffer, every round: measured here, allocating and
touching 40 MB costs 25–34 ms, against 5 ms for writing into a block the heap
already holds.  Raising the mmap and trim thresholds makes those buffers come
from (and go back to) the heap, which keeps them mapped.  Peak memory does not
grow; memory freed after the peak is kept by the process until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_large_blocks"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (larger ones are still mapped).
MMAP_THRESHOLD = 1 << 30
_done = False


def keep_large_blocks() -> bool:
    """Set glibc's mmap and trim thresholds for this process (idempotent).

    Returns whether they were set: False off glibc (musl, macOS), where nothing
    changes."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
