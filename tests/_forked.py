"""``p2pfl ARGS`` as a process forked from the test's interpreter, behind
:class:`subprocess.Popen`'s interface.

A fresh interpreter spends about 2.3 s of CPU importing torch and p2pfl before it does
anything (14 s of wall time on a loaded 2-core machine); a forked one has them already.
The process is a real one all the same: its own pid, its own sockets, its exit status,
signals and pipes as a ``Popen``'s; a test kills, stops or waits for it as for any
other.  The launcher forks its local nodes the same way.  ``tests/test_cli.py`` and a
few others still start the installed command in fresh interpreters.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing.process
import multiprocessing.util
import os
import signal
import subprocess
import sys
import threading
import traceback

__all__ = ["Forked", "CLI", "run"]

#: The argv prefix tests give ``Forked`` (what ``subprocess`` would run).
CLI = [sys.executable, "-m", "p2pfl.cli"]


class Forked(subprocess.Popen):
    """``Forked([sys.executable, "-m", "p2pfl.cli", *ARGS], **popen)``: ``p2pfl ARGS`` in
    a forked process (``stdin``, ``stdout``, ``stderr``, ``cwd``, ``env``, ``text`` and
    ``start_new_session`` as ``Popen`` takes them)."""

    def __init__(self, args, hold: bool = False, **popen) -> None:
        """``hold``: the child waits for a line on its stdin (a ``PIPE``) before it runs
        the command (a node kept ready, to be started again by hand at once)."""
        args = [os.fspath(a) for a in args]
        if args[:3] != CLI:
            raise ValueError(f"not a p2pfl command: {args[:3]}")
        self._hold = hold
        super().__init__(args, **popen)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread,
                       c2pwrite, errread, errwrite, restore_signals, gid, gids, uid, umask,
                       start_new_session, process_group) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child(args[3:], (p2cread, c2pwrite, errwrite), cwd, env, start_new_session,
                   self._hold, preexec_fn)
        self.pid = pid
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)


def run(args, *, timeout=None, check: bool = False, capture_output: bool = False,
        **popen) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` of a :class:`Forked` command."""
    if capture_output:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with Forked(args, **popen) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args, out, err)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _own_helpers() -> None:
    """Forget the test's fork server and resource tracker: their descriptors are closed
    here, and they are not this process's children (a restart would wait for them)."""
    from multiprocessing import forkserver, resource_tracker

    server, tracker = forkserver._forkserver, resource_tracker._resource_tracker
    server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
    server._inherited_fds = None
    server._lock = threading.Lock()
    tracker._fd = tracker._pid = None
    tracker._lock = threading.RLock()


def _child(argv: list, fds: tuple, cwd, env, new_session: bool, hold: bool,
           preexec_fn) -> None:
    code = 1
    try:
        for fd, std in zip(fds, (0, 1, 2)):
            if fd != -1:
                os.dup2(fd, std)
        # as a new process (close_fds): none of the test's descriptors, its sockets
        # among them (a connection the test closed stayed up in such a child); what the
        # parent's objects held is never collected here, so never closed again
        gc.freeze()
        signal.set_wakeup_fd(-1)
        for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
            if fd > 2:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if new_session:
            os.setsid()
        if preexec_fn is not None:
            preexec_fn()
        if cwd is not None:
            os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.default_int_handler)
        # as multiprocessing does in a process it forks: none of the parent's children
        # or finalizers, and its after-fork hooks run
        multiprocessing.process._children.clear()
        multiprocessing.util._finalizer_registry.clear()
        multiprocessing.util._run_after_forkers()
        _own_helpers()
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        if hold:
            sys.stdin.readline()
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        from p2pfl.cli import status

        code = status(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - what an interpreter would print, and exit 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say
                pass
        os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)
