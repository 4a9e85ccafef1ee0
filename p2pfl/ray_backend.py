"""Ray as the placement backend (``p2pfl cluster --backend ray``).

Ray places each node process as an actor on a host of an existing Ray cluster
(``--ray-address``), or of a Ray instance started here, with the resources the
node states (``--node-cpus``, ``--node-gpus``); it supervises the actor and
forwards its output.  That is all Ray does: nodes talk to each other and to the
launcher directly over ZeroMQ TCP, on the address of the host Ray placed them on,
so no model byte passes through Ray's object store and the byte counts mean what
they mean for local processes.

Ray is an optional extra (``pip install -e '.[ray]'`` in a checkout); nothing here imports it
until a run asks for it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import secrets
import signal
import socket

from .errors import ConfigError, Terminated

__all__ = ["RayBackend", "RayRunner", "require_ray"]

#: Seconds a head's port may take to accept a TCP connection before the address is refused
#: (Ray itself retries an unreachable head for minutes, printing a warning each time).
PROBE_S = 5.0

#: Actors of this process so far: each gets a new name (restarts, and later runs of a
#: Ray session the caller keeps).
_SPAWNED = itertools.count()
#: This process's part of its actors' names: its pid alone collided between launchers
#: of one pid (two containers) on one cluster.
_RUN_TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}"


def require_ray():
    """The ``ray`` module, or a usage error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'ray>=2.40' (the ray extra, "
                          "pip install -e '.[ray]' in a checkout)") from None
    return ray


def ray_would_connect_to(address: str) -> str | None:
    """The ``HOST:PORT`` that ``ray.init(address)`` connects to: ``address`` itself, or
    for ``auto`` what ``RAY_ADDRESS`` says, else the cluster ``ray start`` last left word
    of in Ray's temp folder.  None for ``local``, and where Ray finds nothing (it says
    so itself).  ``auto`` is resolved by Ray's own lookup, which is not public API:
    should it be missing or fail otherwise, nothing is probed."""
    if address != "auto":
        return None if address == "local" else address
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment(address, None)
    except Exception:  # ConnectionError: no cluster anywhere; or another Ray version
        return None
    return found if isinstance(found, str) and found not in ("auto", "local") else None


def probe_head(address: str, timeout: float = PROBE_S) -> None:
    """Refuse ``--ray-address`` at once when nothing accepts a TCP connection where Ray
    would connect (:func:`ray_would_connect_to`): a mistyped address, a head that is not
    running, or one that ended and left its address behind.  Ray would retry it for
    minutes.  Whether what answers is Ray, ``ray.init`` finds out."""
    target = ray_would_connect_to(address)
    if target is None:
        return
    host, _, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 literal in brackets
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else \
            (getattr(exc, "strerror", None) or type(exc).__name__).lower()
        if target == address:
            raise ConfigError(f"--ray-address {address}: nothing accepts connections there "
                              f"({why}); is a Ray head running at that address?") from None
        source = "RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "the last `ray start`"
        raise ConfigError(f"--ray-address {address}: Ray would connect to {target} (from "
                          f"{source}), where nothing accepts connections ({why}); is a Ray "
                          "head running?") from None


class NodeActor:
    """One node process, as a Ray actor (wrapped by ``ray.remote`` at spawn time)."""

    def run(self, launcher: str, node_id: int, host: str | None, start_timeout: float) -> int:
        import ray
        import zmq

        from .worker import serve

        here = host or ray.util.get_node_ip_address()
        ctx = zmq.Context()
        try:
            return serve(launcher, node_id, ctx=ctx, scheme="tcp", host=here,
                         start_timeout=start_timeout,
                         placement={"ray_node": ray.get_runtime_context().get_node_id()})
        finally:
            ctx.term()


class RayRunner:
    """The launcher's handle on one node actor, shaped like a process: alive, join,
    terminate, kill."""

    ident = "ray"  # started: the launcher joins it on shutdown

    def __init__(self, ray, actor, done) -> None:
        self._ray, self.actor, self.done = ray, actor, done

    def is_alive(self) -> bool:
        ready, _ = self._ray.wait([self.done], timeout=0)
        return not ready

    def join(self, timeout: float | None = None) -> None:
        self._ray.wait([self.done], timeout=timeout)

    def terminate(self) -> None:
        self._ray.kill(self.actor, no_restart=True)

    def error(self) -> str | None:
        """Why the actor ended, where Ray says (its last line: a host without p2pfl
        gives ``ModuleNotFoundError: No module named 'p2pfl'``); None if it has not
        ended, or ended without an error."""
        if self.is_alive():
            return None
        try:
            self._ray.get(self.done, timeout=1)
        except Exception as exc:  # noqa: BLE001 - Ray's task and actor errors vary
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours its text
            lines = [x.strip() for x in text.splitlines() if x.strip()]
            return lines[-1][:300] if lines else type(exc).__name__
        return None

    kill = terminate


def _signal_handlers() -> dict:
    """SIGINT's and SIGTERM's handlers, where they can be set again (the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


def _fits(hosts: list, what: str, each: float) -> int:
    """How many nodes of ``each`` ``what`` (CPU, GPU) the ``hosts`` place at once."""
    if not each:
        return 1 << 30
    return sum(int(float(h.get(what, 0)) / each + 1e-9) for h in hosts)


class RayBackend:
    """Connects to (or starts) Ray, checks the nodes' resources fit, spawns node actors.

    Parameters
    ----------
    address : str or None
        A running cluster (``HOST:PORT`` or ``auto``); None starts a local instance,
        stopped again with the run.
    host : str or None
        The address nodes (and the launcher) bind; None: the IP Ray gives each host.
    node_cpus, node_gpus : float or None
        Resources each node states; ``node_cpus`` None: an equal share of the cluster's
        CPUs, at most one, that places every node at once on the hosts.
    forward_output : bool
        Ray forwards the nodes' output to this process's stdout (not with ``-q``).
    """

    def __init__(self, address: str | None, host: str | None, node_cpus: float | None,
                 node_gpus: float, log=None, forward_output: bool = True) -> None:
        self.address, self.host = address, host
        self.node_cpus, self.node_gpus = node_cpus, node_gpus
        self.log = log or (lambda text: None)
        # the nodes' output, forwarded by Ray to this process's stdout: not with -q, whose
        # stdout is the run folder alone (a script reads it)
        self.log_to_driver = forward_output
        self._ray = None
        self._owned = True  # this run started or joined Ray itself (ray.init)
        self._actors: list = []  # every actor this run placed
        self._state_task = None  # procfs.process_state as a Ray task
        self._home: str | None = None

    def start(self, num_nodes: int) -> str:
        """Join or start Ray; return the address the launcher binds."""
        ray = require_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no calls home
        kwargs = dict(include_dashboard=False, logging_level=logging.WARNING,
                      namespace="p2pfl", log_to_driver=self.log_to_driver)
        self._owned = not ray.is_initialized()
        if not self._owned and self.address:
            raise ConfigError(f"--ray-address {self.address}: this process is already "
                              "connected to Ray; leave the address out to use that session")
        if self._owned and self.address is not None:
            probe_head(self.address)
        handlers = _signal_handlers()
        # Ray turns on token authentication for a new local instance (its default) and
        # says so in a warning line on every run: authentication stays on, the line goes.
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = notice.level
        if self.address in (None, "local"):
            notice.setLevel(logging.ERROR)
        try:
            if self._owned:  # "local": a new instance even when `ray start` left one behind
                ray.init(address=self.address or "local", **kwargs)
        except SystemExit as exc:  # Ray's SIGTERM handler, in place while it starts, exits
            if exc.code != signal.SIGTERM:  # 15: ours stops the run as any SIGTERM does
                raise
            with contextlib.suppress(Exception):
                ray.shutdown()  # what it had started of a local instance
            raise Terminated(signal.SIGTERM) from None
        except ConnectionError as exc:
            if self.address == "auto" and not os.environ.get("RAY_ADDRESS"):  # Ray's own
                # text names a flag of its CLI, not ours
                raise ConfigError("--ray-address auto: Ray found no running cluster (no "
                                  "RAY_ADDRESS, and no `ray start` on this machine); start "
                                  "one with `ray start --head`, or leave --ray-address out to "
                                  "start Ray here") from None
            hint = ("" if os.environ.get("RAY_AUTH_MODE") else
                    "; a cluster started with token authentication needs RAY_AUTH_MODE=token "
                    "and its RAY_AUTH_TOKEN here too")
            raise ConfigError(f"--ray-address {self.address}: {exc}{hint}") from None
        finally:  # ray.init makes SIGTERM exit at once: ours stops the nodes and writes
            _restore(handlers)  # the summary (p2pfl.signals)
            notice.setLevel(level)
        self._ray = ray
        self._home = ray.get_runtime_context().get_node_id()  # the launcher's Ray host
        hosts = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
        self._check_resources(num_nodes, ray.cluster_resources(), hosts,
                              ray.available_resources())
        where = "started here" if self.address in (None, "local") else "at " + self.address
        self.log(f"Ray cluster {where}: {len(hosts)} host(s); {num_nodes} node actors "
                 f"of {self.node_cpus:g} CPU" + (f", {self.node_gpus:g} GPU"
                                                 if self.node_gpus else ""))
        return self.host or ray.util.get_node_ip_address()

    def _check_resources(self, n: int, have: dict, hosts: list, free: dict) -> None:
        """Every node must be placed at once: within the cluster's total, each on one
        host (the total alone passed 0.8 CPU each on hosts of 2 CPUs, which place 2 a
        host, and a fifth node of ring:5 waited out the start time-out), and within what
        other jobs leave ``free`` (how that is spread over the hosts is not seen)."""
        cpus = float(have.get("CPU", 0))
        if self.node_cpus is None:  # an equal share, so that every node is placed at once
            share = max(0.01, min(1.0, math.floor(100 * cpus / n) / 100))
            while share > 0.01 and _fits(hosts, "CPU", share) < n:
                share = round(share - 0.01, 2)
            self.node_cpus = share
        for what, each in (("CPU", self.node_cpus), ("GPU", self.node_gpus)):
            flag = "--node-cpus" if what == "CPU" else "--node-gpus"
            total, left = float(have.get(what, 0)), float(free.get(what, 0))
            fit = _fits(hosts, what, each)
            if n * each > total + 1e-9:
                raise ConfigError(f"{n} nodes x {each:g} {what} need {n * each:g} {what}s; the "
                                  f"Ray cluster has {total:g} (lower {flag})")
            if each and fit < n:
                raise ConfigError(f"{n} nodes x {each:g} {what}: the Ray cluster's hosts "
                                  f"({', '.join(f'{h.get(what, 0):g}' for h in hosts[:8])} "
                                  f"{what}s) place {fit} at once (lower {flag})")
            if each and n * each > left + 1e-9:
                raise ConfigError(f"{n} nodes x {each:g} {what} need {n * each:g} {what}s; "
                                  f"{left:g} are free on the Ray cluster now, other jobs hold "
                                  f"the rest (lower {flag}, or wait for them)")

    def spawn(self, launcher: str, node_id: int, start_timeout: float,
              here: bool = False) -> RayRunner:
        """Place one node actor and start its node; it joins ``launcher`` itself.
        ``here``: on the launcher's Ray host where it fits (a server run's coordinator,
        whose checkpoint is a file there: placed on another host, a restarted
        coordinator found none and started over)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self._ray
        where = ({"scheduling_strategy": NodeAffinitySchedulingStrategy(self._home, soft=True)}
                 if here and self._home else {})
        cls = ray.remote(NodeActor).options(
            num_cpus=self.node_cpus, num_gpus=self.node_gpus, max_restarts=0,
            name=f"p2pfl-node-{node_id}-{_RUN_TOKEN}-{next(_SPAWNED)}", **where)
        actor = cls.remote()
        self._actors.append(actor)
        return RayRunner(ray, actor, actor.run.remote(launcher, node_id, self.host,
                                                      start_timeout))

    def process_states(self, where: list, timeout: float = 5.0) -> list:
        """The state letter (``T``: stopped) of each ``(ray_node, pid)``, read from
        ``/proc`` by a task placed on that Ray node; None where unknown (no answer
        within ``timeout`` s, a node gone)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .procfs import process_state

        ray, refs = self._ray, []
        if ray is not None and self._state_task is None:  # exported to Ray once
            self._state_task = ray.remote(num_cpus=0, max_retries=0)(process_state)
        for node, pid in where:
            if ray is None or not isinstance(node, str) or not isinstance(pid, int):
                refs.append(None)
                continue
            refs.append(self._state_task.options(scheduling_strategy=(
                NodeAffinitySchedulingStrategy(node, soft=False))).remote(pid))
        asked = [r for r in refs if r is not None]
        done, _ = ray.wait(asked, num_returns=len(asked), timeout=timeout) if asked else ([], [])
        states = []
        for ref in refs:
            try:
                states.append(ray.get(ref, timeout=0) if ref in done else None)
            except Exception:  # noqa: BLE001 - a task that failed: unknown
                states.append(None)
        return states

    def stop(self) -> None:
        """Disconnect; a Ray instance started here stops with it.  A session the caller
        had started stays, and this run's actors are killed in it: an actor whose node
        finished lives on, holding its CPUs, until Ray collects its handle, and the
        next run's actors waited for them to be placed (``benchmarks/ray_session.py``:
        nodes joined in 19.0 and 9.9 s, against 2.2 s with the actors killed)."""
        if self._ray is not None:
            if self._owned:
                self._ray.shutdown()
            else:
                for actor in self._actors:
                    self._ray.kill(actor, no_restart=True)
            self._actors = []
            self._ray = None
