"""``p2pfl ARGS`` run by the test's own interpreter, for refusals that end before any node
starts: a second interpreter costs a second of ``import torch`` each (17 of the bad-input
cases alone took 1.3 s apiece).  The command's code is the same (:func:`p2pfl.cli.status`,
which ``entry`` exits with); ``tests/test_cli.py`` still runs the installed command in
processes of its own for a few of them."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess

from p2pfl.cli import status


def cli_here(*args: str) -> subprocess.CompletedProcess:
    """Exit status, stdout and stderr of ``p2pfl ARGS``; the signal handlers that
    ``main`` sets are put back."""
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = status(list(args))
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return subprocess.CompletedProcess(["p2pfl", *args], code, out.getvalue(), err.getvalue())
