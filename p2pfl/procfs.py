"""A process's state as Linux's ``/proc`` tells it: light, so that a Ray task on
another host can read it without loading the rest of p2pfl."""

from __future__ import annotations

__all__ = ["process_state"]


def process_state(pid) -> str | None:
    """A process's state letter from ``/proc`` (``T``: stopped); None if unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, ValueError, IndexError, TypeError):
        return None
