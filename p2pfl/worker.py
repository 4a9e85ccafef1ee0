"""A node's life around its loop: handshake with the launcher, run, report, stop.

The same function serves a node hosted in its own process (``p2pfl cluster``),
a node thread of an in-process cluster (``--in-process``) and a node started
by hand on another host (``p2pfl node --connect tcp://HOST:PORT``).

Protocol with the launcher (all messages: msgpack header + frames)::

    node → launcher   join    {address, control, pid, host, version,
                               local (inproc, actors of a host)}
    launcher → node   heartbeat (the join was heard), or
                      stop    {refused: why} (another process has the id, another version...)
    launcher → node   config  {spec (a NodeSpec as plain data), addresses of the neighbours}
    node ↔ neighbours hello   (round 0; proves the links work)
    node → launcher   ready
    launcher → node   start
    ... rounds: node → launcher metrics ...
    node → launcher   bye     {final counters}
    launcher → node   stop
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import time
import traceback
from typing import Callable

import zmq

from . import signals
from .errors import Diverged
from .fd_limits import CURVE_SOCKETS, fds_per_actor, raise_fd_limit
from .launcher_link import (HEARTBEAT_S, LAUNCHER_SILENT_S, LOST_AFTER_S, LauncherCheck,
                            LauncherLost, await_config, await_message, await_stop,
                            never_reached, send_weights, tell_interrupted)
from .memory import keep_large_blocks
from .roles import make_role, node_spec
from .scheduling import set_cpu_policy
from .runtime import CLOSER_GRACE_S, LAUNCHER, Runtime
from .transport import Endpoint, Mailbox, bind_address
from .transport.mailbox import Refused
from .transport.sockets import process_identity
from .transport.cpugate import CpuGate
from .transport.liveness import ConnectionWatch
from .transport.security import Security
from .version import __version__

__all__ = ["serve", "process_main", "host_main", "raise_fd_limit", "fds_per_actor",
           "actor_context"]


def _report_unbound(ctx, node_id, launcher: str, security, reason: str) -> None:
    """Tell the launcher why this node could not bind, from an inproc endpoint."""
    name = f"p2pfl-{os.getpid()}-{node_id}-{secrets.token_hex(4)}-unbound"
    ep = Endpoint(ctx, node_id, bind_address("inproc", name), security=security)
    ep.connect(LAUNCHER, launcher, emulated=False)
    ep.send(LAUNCHER, "error", meta={"reason": reason})
    ep.close()


def _handshake(ep: Endpoint, mailbox: Mailbox, spec, addresses: dict, timeout: float) -> None:
    """Connect to every neighbour and hear a hello from each before reporting ready."""
    neighbours = spec.peers
    mailbox.peers = set(neighbours)
    for j in neighbours:
        if not isinstance(addresses.get(j), str):
            raise ValueError(f"no address for neighbour {j}")
        ep.connect(j, addresses[j])
    for j in neighbours:
        ep.send(j, "hello", 0)
    heard = mailbox.collect("hello", 0, neighbours, timeout)
    if set(heard) != set(neighbours) and not mailbox.stopped:
        missing = sorted(set(neighbours) - set(heard))
        raise TimeoutError(f"no hello from neighbour(s) {missing}")


def serve(launcher: str, node_id: int, *, ctx: zmq.Context | None = None,
          scheme: str = "tcp", host: str = "127.0.0.1", run_dir: str = "/tmp",
          alive: Callable[[], bool] | None = None, start_timeout: float = 60.0,
          advertise: str | None = None, security: Security | None = None,
          gate: CpuGate | None = None, placement: dict | None = None,
          report: Callable[[str], None] | None = None, lost_after: float | None = None) -> int:
    """Run one node to completion; return its exit status (0 on success).

    With ``security``, every socket runs on CURVE; the launcher's config tells
    the node its neighbours' public keys.  With ``gate`` (many actors in one
    process), the node computes only in its turn on the host's CPU.  ``placement``
    (e.g. the Ray node it runs on) goes to the launcher with the join.  Why the
    node failed goes to the launcher, and to ``report`` (one line) if given.  After
    ``lost_after`` seconds without word from the launcher (default: 4 start time-outs),
    or, once it was reached, with the connection to it down (default:
    :data:`~p2pfl.launcher_link.LOST_AFTER_S`), the node gives up, unless ``alive``
    says otherwise.
    """
    keep_large_blocks()  # model-sized buffers are reused, not faulted in each round
    with gate if gate is not None else contextlib.nullcontext():
        return _serve(launcher, node_id, ctx, scheme, host, run_dir, alive, start_timeout,
                      lost_after, advertise, security, gate, placement or {},
                      report or (lambda r: None))


def _serve(launcher, node_id, ctx, scheme, host, run_dir, alive, start_timeout, lost_after,
           advertise, security, gate, placement, report) -> int:
    ctx = ctx or zmq.Context.instance()
    name = f"p2pfl-{os.getpid()}-{node_id}-{secrets.token_hex(4)}"
    local = bind_address("inproc", name) if gate is not None and scheme != "inproc" else None
    data = bind_address(scheme, name, host, run_dir)
    try:
        ep = Endpoint(ctx, node_id, data, control=bind_address(scheme, name + "-ctl", host,
                      run_dir), security=security, local=local)
    except zmq.ZMQError as exc:  # the launcher fails fast, with the reason
        reason = f"cannot bind {data}: {exc.strerror}"
        report(reason)
        _report_unbound(ctx, node_id, launcher, security, reason)
        return 1
    mailbox = Mailbox(ep, control_sources={LAUNCHER}, gate=gate)
    # whether the connection to the launcher ever comes up; not for the many actors of a
    # host nor the launcher's own threads (inproc), whose launcher is on this machine and
    # whose contexts count their sockets (a monitor is two more each)
    watch = ConnectionWatch() if gate is None and scheme != "inproc" else None
    # a node of its own (p2pfl node, Ray), not a process of the launcher's that ends with it
    own = watch is not None and alive is None
    # before the start the waits' own time-outs rule (from the launcher's last word:
    # a launcher may start after its nodes, and wait for others); its silence limit after
    check = LauncherCheck(mailbox, launcher, float("inf"), lost_after or LOST_AFTER_S)
    mailbox.alive = alive or check
    status, runtime, unreached, config, running = 1, None, False, None, None
    try:
        # the experimenter's channel: no link, and a routing id of this process, so that
        # the launcher hears (and refuses) a second process with this node's id; for a
        # node of its own, ZMTP heartbeats: a launcher stopped or cut off counts as
        # down, as the launcher's heartbeats find its nodes
        mailbox.own_route = process_identity(node_id)  # a refusal names the process
        ep.connect(LAUNCHER, launcher, emulated=False, routing_id=mailbox.own_route,
                   watch=None if watch is None else lambda sock: watch.watch(LAUNCHER, sock),
                   heartbeat_s=HEARTBEAT_S if own else None)
        address, control = ep.address, ep.control_address
        if advertise:  # tcp://0.0.0.0:PORT is not reachable: tell peers our name
            address, control = (f"tcp://{advertise}:{a.rsplit(':', 1)[1]}"
                                for a in (address, control))
        joined_at = time.monotonic()
        ep.send(LAUNCHER, "join", meta={"address": address, "control": control,
                                         "pid": os.getpid(), "host": socket.gethostname(),
                                         "local": ep.local_address, "version": __version__,
                                         **placement})
        if watch is not None:
            # its events are read while waiting, or a long wait's retries fill their queue
            mailbox.on_tick = lambda: (signals.check(), watch.poll(time.monotonic()))
        try:
            config = await_config(mailbox, launcher, start_timeout, joined_at, control, watch,
                                  secure=security is not None)
        finally:
            # a node process's own: a Ctrl-C (cli.py) whose exception was lost in a
            # destructor is raised again (else every later one is only recorded)
            mailbox.on_tick = signals.check if watch is not None else None
            # what is queued for a launcher never reached cannot leave
            unreached = config is None and never_reached(watch)
        if own:  # reached: a dead launcher is seen by its connection down, not after
            check.watch = watch  # minutes of silence
        elif watch is not None:
            watch.close()
        spec = node_spec(config.get("spec"))
        if scheme != "inproc":  # a process of nodes alone, not the launcher's (threads)
            set_cpu_policy(spec.runtime.cpu_policy)
        if security is not None:
            for j, key in config.get("keys") or []:
                ep.bind_key(j, key)
        ep.emulate(spec.link, seed=spec.learn.seed * 7919 + spec.id)
        addresses = {int(j): a for j, a in config.get("addresses", [])}
        runtime = Runtime(ep, mailbox, spec)
        node = make_role(runtime, spec)
        rejoin = config.get("rejoin") is True  # restarted mid-run: neighbours are busy
        if rejoin:
            mailbox.peers = set(spec.peers)
            for j, address in addresses.items():
                ep.connect(j, address)
        else:
            _handshake(ep, mailbox, spec, addresses, start_timeout)
        ep.send(LAUNCHER, "ready")
        start = await_message(mailbox, "start", start_timeout, sliding=True).meta
        check.silence_s = lost_after or 4 * start_timeout
        elapsed = start.get("elapsed", 0.0) if rejoin else 0.0
        runtime.t_start = time.monotonic() - (elapsed if isinstance(elapsed, float) else 0.0)
        running = node
        after = config.get("round") if rejoin else 0
        after = after if type(after) is int and after >= 0 else 0
        if rejoin:
            node.run(rejoin=True, after=after)
        else:
            node.run()
        if mailbox.lost:
            raise LauncherLost(check.reason() if alive is None else "the launcher or this "
                               "node's host is gone, and this node's records with it")
        runtime.flush()  # the last held records go before the bye
        # a replacement for a process that died after its last round played none, nor
        # one whose neighbours had finished (a gossip node's ``untrained``): its model is
        # the initial one, not worth a file (nor replacing a saved one)
        untrained = after >= spec.runtime.rounds or getattr(node, "untrained", False)
        if spec.runtime.save_models and not (rejoin and untrained):
            send_weights(ep, node)
        _drain_link(runtime, _drain_time(spec))
        ep.send(LAUNCHER, "bye", meta=node.final_report())
        if not mailbox.stopped:
            await_stop(mailbox, start_timeout)
        if mailbox.lost and alive is None:
            raise LauncherLost(check.reason(finished=True))
        silent = time.monotonic() - mailbox.last_control
        if not mailbox.stopped and silent > LAUNCHER_SILENT_S:
            raise LauncherLost(f"no stop, and no word from the launcher for {silent:.0f} s "
                               "after this node's last round: its records may be lost")
        status = 0
        if mailbox.cut and own:  # a batch script must not read this as a finished run
            report("the launcher stopped the run before its end (interrupted, or it failed)")
            status = 1
    except Refused as exc:  # the launcher knows why: it is not told again
        report(str(exc))
        status = 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM to `p2pfl node` (cli.py)
        if config is not None:  # else it is waited for again, to be started anew
            tell_interrupted(ep, runtime, running, exc)
        raise
    except Exception as exc:  # report, then exit non-zero; never hang
        ours = isinstance(exc, (TimeoutError, LauncherLost, Diverged)) and str(exc)  # in words
        reason = str(exc) if ours else f"{type(exc).__name__}: {exc}"
        report(reason)
        if runtime is not None:
            runtime.flush()  # the rounds it completed are recorded
        ep.send(LAUNCHER, "error", meta={"reason": reason, "trace": traceback.format_exc()[-4000:]})
    finally:
        # After the launcher's stop every peer is done: nothing left is worth waiting for,
        # but what goes to the launcher (the last records, the bye) may still be queued.
        # A refused or replaced process sends nothing more (a replaced coordinator's final
        # models would race its replacement's); nor does one that never reached its
        # launcher (a Ctrl-C then took 2 s more, waiting for a join that could not leave).
        gone = unreached or check.down()  # nothing can reach it: no linger for it
        if watch is not None:
            watch.close()
        done = status == 2 or (mailbox.stopped and status == 0) or gone
        ep.close(linger=0 if done else None, spare=() if gone else (LAUNCHER,))
    return status


#: How long a finished node waits for its protocol messages (a final leave, ...) to leave
#: an emulated uplink once the round payloads queued before them are dropped.
PROTOCOL_DRAIN_S = 5.0


def _drain_time(spec) -> float:
    """How long a finished node lets its emulated uplink send what it holds: a round
    time-out (what a synchronous peer waits for our last messages), and for a server
    run's coordinator its final models' grace as well; asynchronous leftovers are
    stale models, not waited for.  A coordinator already waited as long before its
    last record; what a slow link still holds then gets this second wait, since the
    workers wait for their final models until a grace after its bye
    (``benchmarks/stalled_uplink.py``: 3 of 3 finals delivered, against 1 without it)."""
    if spec.runtime.schedule != "sync":
        return 0.0
    grace = CLOSER_GRACE_S if spec.role == "coordinator" else 0.0
    return spec.runtime.round_timeout + grace


def _drain_link(runtime: Runtime, timeout: float) -> None:
    """Let an emulated uplink send what it still holds, for up to ``timeout`` s, then
    drop the rest (counted), so that the bye's counters are final.

    A synchronous peer may still wait for our last round's messages, and waits at most
    a round time-out for them; an asynchronous node's leftovers are stale models.
    """
    for wait in (timeout, PROTOCOL_DRAIN_S):  # then what the protocol still sends
        runtime.drain_uplink(wait)
        runtime.endpoint.discard_link_backlog()  # payloads; a final leave, ... at once


def _own_signals() -> None:
    """A node (or host) process leaves Ctrl-C to the launcher, and ends at once on
    SIGTERM, without a word: the launcher's handler, inherited through fork, raised
    an exception in every node, and SIGTERM to the whole process group (``timeout``,
    Slurm, ``kill -- -PGID``) printed a traceback from each.  The launcher's record
    of its signals, copied by the fork, is not the node's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, _: os._exit(128 + signum))
    signals.clear()


def _die_with_parent() -> Callable[[], bool]:
    """Ask Linux to kill this process when the launcher dies; return a liveness check."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(3)
    return lambda: os.getppid() == parent


def process_main(launcher: str, node_id: int, scheme: str, host: str, run_dir: str,
                 start_timeout: float, security: Security | None = None) -> None:
    """Entry point of a node process spawned by the launcher."""
    _own_signals()
    alive = _die_with_parent()
    ctx = zmq.Context()
    try:
        status = serve(launcher, node_id, ctx=ctx, scheme=scheme, host=host, run_dir=run_dir,
                       alive=alive, start_timeout=start_timeout, security=security)
    finally:
        ctx.term()
    sys.stdout.flush()
    os._exit(status)


def actor_context(num_actors: int, degree: int, secure: bool = False) -> zmq.Context:
    """A context allowed enough sockets for ``num_actors`` actors of ``degree``
    neighbours (libzmq's default is 1023): a data and a control socket, one per
    neighbour and one to the launcher each, an emulated link's pipe (a PAIR at each
    end, :class:`~p2pfl.transport.links.LinkEmulator`), and with CURVE the monitors;
    the launcher: ``degree`` 1."""
    ctx = zmq.Context()
    extra = 6 + (CURVE_SOCKETS if secure else 0)
    ctx.set(zmq.MAX_SOCKETS, max(1024, num_actors * (degree + extra) + 64))
    return ctx


def host_main(launcher: str, node_ids: list, scheme: str, host: str, run_dir: str,
              start_timeout: float, max_degree: int, security: dict) -> None:
    """Entry point of a host process of an in-process cluster: many node actors, one
    thread each, taking turns on this process's CPU (:mod:`~p2pfl.transport.cpugate`).
    ``security`` maps each actor to its CURVE setup (or None): the actors share one
    context, and so one ZAP handler, with a domain each.

    The host exits 0 when every actor finished, 1 when one failed (it said why)."""
    import threading

    _own_signals()
    alive = _die_with_parent()
    secure = any(v is not None for v in security.values())
    raise_fd_limit(len(node_ids) * fds_per_actor(max_degree, secure) + 256)
    ctx = actor_context(len(node_ids), max_degree, secure)
    gate = CpuGate()
    status = {}

    def actor(node_id):
        status[node_id] = serve(launcher, node_id, ctx=ctx, scheme=scheme, host=host,
                                run_dir=run_dir, alive=alive, start_timeout=start_timeout,
                                gate=gate, security=security.get(node_id))

    threads = [threading.Thread(target=actor, args=(j,), name=f"node-{j}", daemon=True)
               for j in node_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.close()
    ctx.term()
    sys.stdout.flush()
    os._exit(0 if all(status.get(j) == 0 for j in node_ids) else 1)
