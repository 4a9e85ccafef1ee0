"""Open files: what an actor holds, raising this process's limit, and whether the
launcher may open what its nodes' connections need."""

from __future__ import annotations

from .errors import UsageError

__all__ = ["CURVE_SOCKETS", "fds_per_actor", "raise_fd_limit", "fit_launcher_fds",
           "FDS_PER_NODE"]

#: Sockets (and so wake-up descriptors) CURVE adds to an actor: a monitor of each of
#: its two receiving sockets, for the handshakes they refuse, is a PAIR at each end.
CURVE_SOCKETS = 4


def fds_per_actor(degree: int, secure: bool = False) -> int:
    """Open files one actor may hold: a wake-up descriptor for each of its sockets
    (data, control, the launcher's, one per neighbour, an emulated link's two pipe
    ends, and with CURVE its monitors), two listeners, and a connection each way per
    neighbour in another process and to the launcher."""
    return 2 * degree + 10 + (CURVE_SOCKETS if secure else 0)


def raise_fd_limit(wanted: int) -> None:
    """Allow ``wanted`` open files if the system lets us (each socket connection is one)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    for limit in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return
        except (ValueError, OSError):
            continue


#: Open files the launcher holds per node (a connection each way and a wake-up
#: descriptor): 1,553 at 512 in-process actors, 785 at 256 (793 with --secure).
FDS_PER_NODE = 3


def fit_launcher_fds(degrees: list, threads: bool) -> None:
    """Raise the launcher's limit to what its nodes' connections need (a socket to each
    node's control socket, plus their links; with ``threads``, ``--transport inproc``,
    every actor's sockets too: a wake-up descriptor for each socket of each actor, 2,060
    at 256 actors of degree 4), and a usage error, before any node starts, where it may
    not: libzmq aborted the launcher (SIGABRT, no summary) at "Too many open files"."""
    import resource

    actors = sum(fds_per_actor(d) for d in degrees) if threads else 0
    raise_fd_limit(4 * len(degrees) + 256 + actors)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    need = 64 + (sum(d + 5 for d in degrees) if threads else FDS_PER_NODE * len(degrees))
    if soft != resource.RLIM_INFINITY and soft < need:
        raise UsageError(f"{len(degrees)} nodes need about {need} open files in the "
                         f"launcher, and it may open {soft} (ulimit -Hn): raise the "
                         "limit, or run fewer nodes")
