"""A process's state as Linux's ``/proc`` tells it: light, so that a Ray task on
another host can read it without loading the rest of p2pfl."""

from __future__ import annotations

__all__ = ["process_state", "start_ticks"]


def _stat_field(pid, index: int) -> str | None:
    """Field ``index`` of ``/proc/PID/stat`` after the command name (which may hold
    spaces and parentheses: the fields start after its last ``)``); None if unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[index].decode()
    except (OSError, ValueError, IndexError, TypeError):
        return None


def process_state(pid) -> str | None:
    """A process's state letter from ``/proc`` (``T``: stopped); None if unknown."""
    return _stat_field(pid, 0)


def start_ticks(pid) -> str | None:
    """When a process started, in clock ticks since boot (the 22nd field): with its id,
    it tells a process from a later one given the same id; None if there is none."""
    return _stat_field(pid, 19)
