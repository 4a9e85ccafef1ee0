"""Ctrl-C and SIGTERM unwind a run through the launcher's clean shutdown.

A signal handler's exception is raised wherever the main thread happens to be
when Python runs the handler.  Raised inside a destructor (a ZeroMQ frame freed
while the launcher polls, say) it is printed as "Exception ignored" and lost,
and the run went on as if nothing had been asked.  So :func:`handler` also
records the signal, and the launcher's loops call :func:`check`, which raises it
again if nothing else did.
"""

from __future__ import annotations

import signal

from .errors import Terminated

__all__ = ["handler", "check", "clear", "standing_for"]

_pending: list = []  # signals whose exception may not have reached the launcher


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def handler(signum, frame) -> None:
    """For SIGINT and SIGTERM: raise KeyboardInterrupt (SIGTERM: :class:`Terminated`).
    A second signal while the first unwinds is recorded only: it does not cut short
    the clean shutdown that stops the nodes."""
    _pending.append(signum)
    if len(_pending) == 1:
        raise _exception(signum)


def standing_for(exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """The exception of the first signal recorded, where a library turned ours into a
    plain KeyboardInterrupt (Ray does, for a signal handled during one of its calls:
    a SIGTERM then ended the run as a Ctrl-C, exit 130); else ``exc``."""
    if _pending and type(exc) is KeyboardInterrupt and _pending[0] != signal.SIGINT:
        return _exception(_pending[0])
    return exc


def check() -> None:
    """Raise the first recorded signal's exception again (its raise may have been lost)."""
    if _pending:
        raise _exception(_pending[0])


def clear() -> None:
    """The run the signals were for has unwound: forget them."""
    _pending.clear()
