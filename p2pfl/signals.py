"""Ctrl-C and SIGTERM unwind a run through the launcher's clean shutdown.

A signal handler's exception is raised wherever the main thread happens to be
when Python runs the handler.  Raised inside a destructor (a ZeroMQ frame freed
while the launcher polls, say) it is printed as "Exception ignored" and lost,
and the run went on as if nothing had been asked.  So :func:`handler` also
records the signal, and the launcher's loops call :func:`check`, which raises it
again if nothing else did.  Where an exception must not cut a step in two (a
message taken off its socket and not yet handled is lost), the step runs
:func:`deferred`: a signal then only is recorded, and is raised when the step ends.
Every message an endpoint queues is such a step (:func:`uncut`): cut between its
parts, it is lost, and so is the next one on its socket.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from .errors import Terminated

__all__ = ["handler", "check", "clear", "deferred", "pending", "standing_for", "name_of",
           "STOPPED_BY", "uncut"]

_pending: list = []  # signals whose exception may not have reached the launcher
_deferring: list = []  # one entry a deferred() or uncut() step in progress
_MAIN = threading.main_thread().ident


#: How a node process stopped by each signal that unwinds it ended, in the launcher's words.
STOPPED_BY = {"SIGINT": "its process was interrupted (SIGINT)",
              "SIGTERM": "its process was terminated (SIGTERM)"}


def name_of(exc: KeyboardInterrupt) -> str:
    """The signal that raised ``exc``: ``SIGTERM`` (:class:`Terminated`), else ``SIGINT``."""
    return "SIGTERM" if getattr(exc, "signum", None) == signal.SIGTERM else "SIGINT"


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def handler(signum, frame) -> None:
    """For SIGINT and SIGTERM: raise KeyboardInterrupt (SIGTERM: :class:`Terminated`).
    A second signal while the first unwinds is recorded only: it does not cut short
    the clean shutdown that stops the nodes."""
    _pending.append(signum)
    if len(_pending) == 1 and not _deferring:
        raise _exception(signum)


@contextlib.contextmanager
def deferred(active: bool = True):
    """Run a step that a signal's exception must not cut in two: the handler only records
    a signal meanwhile, and :func:`check` raises it when the step ends.  Not ``active``:
    the step runs as it is (signals are not handled by :func:`handler`)."""
    if not active:
        yield
        return
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
    check()


def uncut(step, *args, **kwargs):
    """``step(*args, **kwargs)``, which a signal's exception must not cut in two: a message whose
    first parts were queued and whose last were not is lost, and takes the next message
    on its socket with it (ZeroMQ appends that one's parts).  A run's first signal that
    arrives meanwhile is raised once the step returns (one while an earlier signal
    unwinds the run, or inside :func:`deferred`, is left to those).  For the main thread
    only, the one that runs signal handlers; any other thread just runs the step."""
    if threading.get_ident() != _MAIN:
        return step(*args, **kwargs)
    first = not _pending
    _deferring.append(True)
    try:
        return step(*args, **kwargs)
    finally:
        _deferring.pop()
        if first and _pending and not _deferring:
            raise _exception(_pending[0])


def standing_for(exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """The exception of the first signal recorded, where a library turned ours into a
    plain KeyboardInterrupt (Ray does, for a signal handled during one of its calls:
    a SIGTERM then ended the run as a Ctrl-C, exit 130); else ``exc``."""
    if _pending and type(exc) is KeyboardInterrupt and _pending[0] != signal.SIGINT:
        return _exception(_pending[0])
    return exc


def pending() -> bool:
    """Whether a signal was recorded (a deferred step ends early on it)."""
    return bool(_pending)


def check() -> None:
    """Raise the first recorded signal's exception again (its raise may have been lost)."""
    if _pending:
        raise _exception(_pending[0])


def clear() -> None:
    """The run the signals were for has unwound: forget them."""
    _pending.clear()
