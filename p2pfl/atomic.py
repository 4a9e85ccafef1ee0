"""One way to write a file so that readers see the old one or the new one, never half.

The content goes to a temporary file in the same folder, is flushed and
fsynced, and is renamed over the target (``os.replace`` is atomic on POSIX);
the folder is then fsynced so that the rename survives a power cut.  Metrics
summaries, checkpoints, plots and dataset caches all go through
:func:`write_atomic`.  The file gets the mode a plain ``open`` would give it
(0666 less the umask), or 0600 with ``private=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from typing import Callable

__all__ = ["write_atomic", "write_json_atomic"]


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask now: from /proc (Linux), else by setting and restoring it
    under a lock (a file another thread creates meanwhile could get 022)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_atomic(path, write: Callable, *, text: bool = False, private: bool = False) -> str:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it to ``path``.

    On any error the temporary file is removed and the previous ``path`` (if
    any) is left as it was.  Returns ``path``.  ``private``: readable by the
    owner only (0600); otherwise 0666 less the umask, as ``open`` creates files.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w" if text else "wb") as fh:
            if not private:  # mkstemp creates 0600
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if _plain_os_error(exc) and exc.filename is None:  # a write to the open file:
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc  # say where
        raise
    _fsync_dir(folder)
    return path


def _plain_os_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the OSError its errno makes (ENOSPC's, FileNotFoundError, ...),
    not one of a class of its own (``io.UnsupportedOperation``), which stays as it is."""
    return isinstance(exc, OSError) and exc.errno is not None and \
        type(exc) is type(OSError(exc.errno, ""))


def write_json_atomic(path, obj, default=None) -> str:
    """``obj`` as indented JSON, written atomically."""
    def write(fh):
        json.dump(obj, fh, indent=2, default=default)
        fh.write("\n")

    return write_atomic(path, write, text=True)


def _fsync_dir(folder: str) -> None:
    """Make the rename durable (best effort: not every platform opens folders)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
