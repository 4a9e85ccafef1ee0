"""A launcher's private folder for its ipc sockets (``/tmp/p2pfl-XXXX``), and the sweep of
those a killed launcher left.

A launcher removes its folder when it ends; one killed outright (SIGKILL, the OOM killer,
a batch system's time limit) cannot, and such folders piled up (600 in a day of this
project's test runs).  Each folder names its owner, a process id and that process's start
time (which tells it from a later process given the same id); a launcher sweeps the
folders of owners that are gone before it makes its own.  Folders of other users, and
those without an owner's name (made by an older version), are left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from .errors import UsageError
from .procfs import start_ticks

__all__ = ["make_run_dir", "sweep_stale"]

PREFIX = "p2pfl-"
OWNER = "owner"  # the file in each folder: "PID START_TICKS"


#: The longest path of a socket in a run folder, less the folder's parent: the folder
#: (``p2pfl-`` and 8 characters) and a node's control socket, for 7-digit process ids
#: and 5-digit node ids (``worker._serve``'s names).
LONGEST_TAIL = len("/p2pfl-abcdefgh/p2pfl-4194304-16383-0123abcd-ctl.sock")


def _parent() -> str:
    """The temporary folder, or ``/tmp`` where its path is too long for a socket's (a long
    ``TMPDIR`` failed every node at its bind, after the launch)."""
    import zmq

    limit = getattr(zmq, "IPC_PATH_MAX_LEN", 107) or 107
    base = tempfile.gettempdir()
    if len(base) + LONGEST_TAIL <= limit:
        return base
    if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    raise UsageError(f"the temporary folder {base} is too long a path for the nodes' ipc "
                     f"sockets (at most {limit - LONGEST_TAIL} characters); set TMPDIR to a "
                     "shorter one")


def make_run_dir() -> str:
    """A new private folder that names this process as its owner (old ones swept first)."""
    parent = _parent()
    sweep_stale(parent)
    path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
    ticks = start_ticks(os.getpid())
    if ticks is not None:
        with open(os.path.join(path, OWNER), "w") as fh:
            fh.write(f"{os.getpid()} {ticks}\n")
    return path


def _owner_gone(path: str) -> bool:
    try:
        with open(os.path.join(path, OWNER)) as fh:
            pid, ticks = fh.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # no owner named (an older version's, or one being made): kept
    return start_ticks(pid) != ticks


def sweep_stale(folder: str | None = None, limit: int = 4096) -> int:
    """Remove up to ``limit`` run folders in ``folder`` (the temporary folder) that this
    user's launchers left when they were killed; returns how many."""
    folder = folder or tempfile.gettempdir()
    if not os.path.isdir("/proc/self"):
        return 0
    removed = 0
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(PREFIX)]
    except OSError:
        return 0
    for entry in entries[:limit]:
        try:
            mine = entry.is_dir(follow_symlinks=False) and \
                entry.stat(follow_symlinks=False).st_uid == os.getuid()
        except OSError:
            continue
        if mine and _owner_gone(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed
