"""How the launcher starts local nodes: forked processes, host processes of many
actors, or threads of the launcher itself (:class:`~p2pfl.cluster.Launcher`).

Each function starts the runners of ``nodes`` (:class:`~p2pfl.node_handle.NodeHandle`,
keyed by id) and records them on the handles; the nodes then join the launcher
at ``address``.  Processes are forked, so they inherit the dataset, the
partition and the models the plan loaded.  A restarted node comes from a fork server
(multiprocessing's ``forkserver``) that has imported what a node needs: a fresh interpreter
spent 2.3 s of CPU importing torch at every restart, during which its neighbours went on
without it.  The server is started once the run is under way (:func:`warm_restarts`), and
stopped with the run (:func:`stop_restarts`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
import threading
import types

from .fd_limits import fds_per_actor
from .worker import host_main, process_main, serve

__all__ = ["spawn_processes", "spawn_hosts", "spawn_threads", "respawn", "warm_restarts",
           "stop_restarts"]

#: What a node's process imports, imported once by the fork server of restarted nodes.
RESTART_PRELOAD = ["torch", "p2pfl.worker", "p2pfl.node", "p2pfl.learner", "p2pfl.data"]


def _actors_per_host(degree: int, secure: bool) -> int:
    """How many actors one host process can hold within its (hard) open-file limit."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    return max(1, (limit - 512) // fds_per_actor(degree, secure))


def spawn_processes(nodes: dict, address: str, how: tuple, security) -> None:
    """One forked process a node; ``how`` is (scheme, host, run_dir, start_timeout),
    ``security(id)`` a node's CURVE setup or None."""
    for h in nodes.values():
        _start_process(h, "fork", address, how, security(h.id))


def spawn_hosts(nodes: dict, specs: list, address: str, how: tuple, procs: int, log,
                security) -> None:
    """``procs`` forked host processes, each running a contiguous share of the nodes
    as actors (:func:`~p2pfl.worker.host_main`); more when the open-file limit needs
    it (said through ``log``).  ``security(id)``: each actor's CURVE setup or None."""
    fork = mp.get_context("fork")
    ids = [s.id for s in specs]
    degree = max(len(s.peers) for s in specs)
    wanted, procs = procs, max(1, min(procs, len(ids)))
    setups = {j: security(j) for j in ids}
    per_host = _actors_per_host(degree, setups[ids[0]] is not None)
    if len(ids) > procs * per_host:
        procs = -(-len(ids) // per_host)
        log(f"{len(ids)} actors need more open files than {wanted} host "
            f"process(es) may have: using {procs} hosts of at most {per_host}")
    for k in range(procs):
        share = ids[k * len(ids) // procs:(k + 1) * len(ids) // procs]
        host = fork.Process(target=host_main, name=f"p2pfl-host-{k}", daemon=True,
                            args=(address, share, *how, degree,
                                  {j: setups[j] for j in share}))
        host.start()
        for j in share:
            nodes[j].runner, nodes[j].pid = host, host.pid


def spawn_threads(nodes: dict, address: str, ctx, alive, start_timeout: float) -> None:
    """One thread of this process a node, over ``inproc://`` sockets of ``ctx``."""
    for h in nodes.values():
        h.runner = threading.Thread(
            target=serve, name=f"node-{h.id}", daemon=True, args=(address, h.id),
            kwargs=dict(ctx=ctx, scheme="inproc", alive=alive, start_timeout=start_timeout))
        h.runner.start()


def respawn(h, address: str, how: tuple, security) -> None:
    """A new process for a node that died, from the fork server (not forked from the
    launcher, whose threads and sockets a fork would copy)."""
    _preload()
    _start_process(h, "forkserver", address, how, security)


def _preload() -> None:
    """What the fork server imports when it starts (no effect once it runs)."""
    mp.get_context("forkserver").set_forkserver_preload(RESTART_PRELOAD)


def warm_restarts() -> None:
    """Start the fork server of restarted nodes now, not at the first restart."""
    from multiprocessing import forkserver

    _preload()
    with _bare_main():  # it would import the caller's script otherwise
        forkserver.ensure_running()


def stop_restarts() -> None:
    """Stop the fork server, if one runs (it would hold its imports, some 300 MB, for as
    long as the caller's interpreter lives: a notebook's kernel)."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # Python 3.9+
    if stop is not None and forkserver._forkserver._forkserver_pid is not None:
        with contextlib.suppress(OSError, ChildProcessError):
            stop()


def _start_process(h, method: str, address: str, how: tuple, security) -> None:
    """Node ``h`` in a process of its own, started by ``method`` (fork or spawn)."""
    h.runner = mp.get_context(method).Process(
        target=process_main, name=f"p2pfl-node-{h.id}", daemon=True,
        args=(address, h.id, *how, security))
    if method == "fork":
        h.runner.start()
    else:
        with _bare_main():
            h.runner.start()
    h.pid = h.runner.pid


@contextlib.contextmanager
def _bare_main():
    """A spawned process imports the parent's ``__main__``: the user's script, run
    again top to bottom in the node when it has no ``if __name__ == "__main__"``
    guard.  The node needs nothing from it (its target and arguments are p2pfl's),
    so the parent's ``__main__`` is a bare module while the process starts."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
