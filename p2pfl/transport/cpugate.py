"""Turns on a host's CPU for the node actors it hosts, and the host's idle clock.

Many node actors share one host process (``--in-process``).  Left to Python's
GIL, hundreds of threads that each run many small torch operations hand the
interpreter back and forth on every operation (each one releases the GIL), and
a thread that gives it up waits a switch interval to get it back: the host
spends its time convoying instead of computing.  So an actor computes only
while it holds the host's :class:`CpuGate`, and gives it up only while it waits
for messages.  The gate is fair (first come, first served), so every actor
gets its turn within one pass over the others.

Torch keeps per-thread state (autograd's, and the allocator's arena): about
0.4 MB for each thread that trains.  So the actor that holds the gate hands
its model work to the host's one compute thread (:meth:`CpuGate.compute`),
and a thousand actors cost one thread's torch state, not a thousand.

The gate also tells how long the host was *idle*: no actor computing.  A
round time-out is measured on that clock (:meth:`CpuGate.idle_clock`), so it
means "a peer did not deliver although this host had nothing else to do",
never "the host was busy with other actors": with 512 actors in a queue, a
neighbour's turn may come seconds after ours without anyone being slow.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["CpuGate"]


class CpuGate:
    """A fair lock over a host's compute, with busy-time accounting."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queue: deque = deque()  # waiters' locks, first come first served
        self._held = False
        self._since = 0.0  # when the current holder got the gate
        self._busy = 0.0  # seconds the gate was held, holders before the current one
        self._executor = None  # the host's compute thread, started on first use

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held, self._since = True, time.monotonic()
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._queue.append(waiter)
        waiter.acquire()  # released by the holder: the gate is ours (still held)

    def release(self) -> None:
        with self._mutex:
            now = time.monotonic()
            self._busy += now - self._since
            if self._queue:  # hand over directly: nobody can jump the queue
                self._since = now
                self._queue.popleft().release()
            else:
                self._held = False

    def idle_clock(self) -> float:
        """Seconds during which no actor of this host held the gate (a monotonic clock)."""
        with self._mutex:
            busy = self._busy + (time.monotonic() - self._since if self._held else 0.0)
            return time.monotonic() - busy

    def compute(self, fn, *args):
        """``fn(*args)`` on the host's compute thread (called by the gate's holder)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix="p2pfl-compute")
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> "CpuGate":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
