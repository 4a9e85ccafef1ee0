"""The launcher: spawn a local cluster, hold the readiness barrier, shut it down cleanly.

Nodes are OS processes by default (forked, one per node).  With
``--in-process`` they are actors, one thread each, of a few host processes
(``--procs P``, forked, talking over ``ipc://``), or of this process itself
over ``inproc://`` sockets (``--transport inproc``).  With ``--backend ray`` they
are Ray actors placed on a Ray cluster (:mod:`~p2pfl.ray_backend`), talking over
TCP.  How local nodes are started is :mod:`~p2pfl.spawn`; what happens when they
fail or stop mid-run, :mod:`~p2pfl.supervision`.  The launcher talks to
them over the same wire format as the nodes use among themselves.  No node
outlives the launcher: nodes are stopped, then terminated, then killed when
the run ends for any reason; a node process also dies with its parent
(``PR_SET_PDEATHSIG``) and notices a lost launcher.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import zmq

from . import signals
from .admission import Admission
from .errors import ClusterError, UsageError
from .launcher_link import HEARTBEAT_S, LOST_AFTER_S, START_BEAT_S, config_fields
from .metrics import write_json_atomic
from .run_dirs import make_run_dir
from .runtime import LAUNCHER
from .transport import Endpoint, Mailbox
from .transport.mailbox import NODE_REPORTS
from .transport.liveness import ConnectionWatch
from .transport.security import Security
from .spawn import (spawn_hosts, spawn_processes, spawn_threads, stop_restarts,
                    warm_restarts)
from .fd_limits import fit_launcher_fds
from .node_handle import NodeHandle
from .supervision import Supervision
from .worker import actor_context

__all__ = ["Launcher", "NodeHandle", "ClusterError"]


class Launcher(Supervision, Admission):
    """Runs one cluster.

    Parameters
    ----------
    specs : list of NodeSpec
        One per node, from the plan.
    out_dir : str
        Where ``nodes.json`` is kept up to date.
    in_process, scheme, host
        How nodes are hosted and which transport they bind.
    """

    #: No word from any node this long (or 6 round time-outs): the running ones that did
    #: not say they went offline have failed (a hung host, say).
    SILENCE_S = 120.0

    def __init__(self, specs: list, out_dir: str, *, in_process: bool = False,
                 scheme: str = "tcp", host: str = "127.0.0.1", start_timeout: float = 60.0,
                 round_timeout: float = 10.0, lost_after: float | None = None,
                 on_message=None, log=None, notice=None, between=None,
                 listen: str | None = None, closer=None, restarts: int = 0,
                 on_restart=None, keys=None, procs: int = 1, backend=None) -> None:
        self.specs = specs
        self._spec = {s.id: s for s in specs}
        self.backend = backend  # RayBackend: nodes are Ray actors (--backend ray)
        self.procs = procs  # host processes for in-process actors (over ipc)
        self.keys = keys  # RunKeys: CurveZMQ on every socket (--secure)
        # the run's keys, bound: one table that the nodes of a host process share
        self._run_keys = None if keys is None else Security(
            keys.launcher, {**keys.public, LAUNCHER: keys.launcher.public})
        self.restart_limit = restarts  # restarts allowed per node (--restart on-failure:N)
        self.on_restart = on_restart or (lambda handle: None)
        self.closer = closer  # when this node is done, the others get a little while
        self.out_dir = out_dir
        self.in_process = in_process
        self.listen = listen  # bind here and wait for remote nodes instead of spawning
        self.scheme = scheme
        self.host = host
        self.start_timeout = start_timeout
        self.round_timeout = round_timeout
        # a remote node's connection down this long: failed (--lost-after)
        self.lost_after = LOST_AFTER_S if lost_after is None else lost_after
        self.on_message = on_message or (lambda handle, msg: None)
        # called between two handlings of messages, where a signal is raised at once
        self.between = between or (lambda: None)
        self.log = log or (lambda text: None)
        # what a quiet run still says: where remote nodes join (--listen HOST:*)
        self.notice = notice or self.log
        self.nodes = {s.id: NodeHandle(s.id, s.label) for s in specs}
        self.run_dir = make_run_dir()  # and the folders of killed launchers swept
        self.ctx: zmq.Context | None = None
        self.ep: Endpoint | None = None
        self.control_bytes = 0
        self.dropped: dict = {}  # what the launcher dropped, by reason (at shutdown)
        # result files that could not be written (a full disk), by path: nodes.json (until
        # a later write of it succeeds) and models/node-ID.pt
        self.write_errors: dict = {}
        self.save_models = any(s.runtime.save_models for s in specs)
        self.t_start: float | None = None  # set when the run starts
        self.t_configs: float | None = None  # when the configs went out (no new joins after)
        self._next_exit_check, self._dead = 0.0, {}
        self._next_stopped_check = 0.0
        self._graces: dict = {}  # id -> (until when, why): said it stops on a signal
        self._said_down: dict = {}  # remote id -> the outage its lost connection was said of
        self._said_handshakes: dict = {}  # reason -> refused handshakes said so far
        self._said_offline = False  # that the run waits for offline nodes (supervision.py)
        self.watch = ConnectionWatch()  # remote nodes' control connections (--listen)
        self._refused: dict = {}  # (id, route) of a join refused -> why (admission.py)
        self._spoof_answers: dict = {}  # key's node -> joins for other ids answered
        self.watch_signals = False  # Ctrl-C and SIGTERM go through p2pfl.signals

    # ------------------------------------------------------------------ phases
    def run(self) -> dict:
        """Spawn, barrier, run to the end, shut down; return the per-node handles."""
        try:
            self._spawn_and_bind()
            self._barrier()
            self._monitor()
        finally:
            self.shutdown()
        return self.nodes

    def _spawn_and_bind(self) -> None:
        fit_launcher_fds([len(s.peers) for s in self.specs], self._threads)
        if self.listen:  # nodes are started elsewhere with `p2pfl node --connect`
            self.ctx = actor_context(len(self.nodes), 1)
            try:
                self._bind(self.listen)
            except zmq.ZMQError as exc:  # taken since run_cluster's check, or refused by ZeroMQ
                raise UsageError(f"--listen {self.listen!r}: {exc.strerror}") from None
            # a port chosen now (*) is said even to a quiet run: its nodes need it
            say = self.notice if self.listen.endswith(":*") else self.log
            closer = self.nodes.get(self.closer) if self.closer is not None else None
            ids = f" (the coordinator is --id {closer.id})" if closer is not None else ""
            say(f"waiting for {len(self.nodes)} node(s) to join at {self.ep.address}{ids}")
            return
        if self.backend is not None:
            host = self.backend.start(len(self.nodes))
            self.ctx = actor_context(len(self.nodes), 1)
            self._bind(f"tcp://{host}:*")
            # a server run's coordinator first, on this host while it has room
            for h in sorted(self.nodes.values(), key=lambda h: h.id != self.closer):
                h.runner = self.backend.spawn(self.ep.address, h.id, self.start_timeout,
                                              here=h.id == self.closer)
            return
        if self.in_process and self.scheme != "inproc":
            address = f"ipc://{self.run_dir}/launcher.sock"
            spawn_hosts(self.nodes, self.specs, address, self._how(), self.procs, self.log,
                        self._node_security)
            self.ctx = actor_context(len(self.nodes), 1)
            self._bind(address)
            self._watch_exits()
            return
        if self.in_process:
            self.ctx = actor_context(len(self.nodes), max(len(s.neighbours) for s in self.specs))
            address = f"inproc://p2pfl-launcher-{id(self)}"
            self._bind(address)
            spawn_threads(self.nodes, address, self.ctx, self._alive, self.start_timeout)
            return
        # Fork the nodes before this process creates any ZeroMQ context.
        address = f"ipc://{self.run_dir}/launcher.sock"
        spawn_processes(self.nodes, address, self._how(), self._node_security)
        self.ctx = actor_context(len(self.nodes), 1)
        self._bind(address)
        self._watch_exits()

    def _how(self) -> tuple:
        """How a spawned node binds and starts: scheme, host, run folder, start time-out."""
        return (self.scheme, self.host, self.run_dir, self.start_timeout)

    def _node_security(self, node):
        """A spawned node's CURVE setup: its key pair; every key of the run, bound (one
        table, which the nodes of a host process share)."""
        if self.keys is None:
            return None
        return self._run_keys.sharing(self.keys.pairs[node])

    def _config(self, spec) -> dict:
        """What a node needs to start: its spec, and its peers' addresses (and keys)."""
        meta = {"spec": spec.to_wire(),
                "addresses": [[j, self._address_for(spec.id, j)] for j in spec.peers]}
        if self.keys is not None:
            meta["keys"] = [[j, self.keys.z85(j)] for j in spec.peers]
        return meta

    def _bind(self, address: str) -> None:
        self._address = address
        security = None if self.keys is None else Security(self.keys.launcher, self.keys.public)
        self.ep = Endpoint(self.ctx, LAUNCHER, address, security=security, process_ids=True)
        self.mailbox = Mailbox(self.ep, peers=set(), control_sources=set(self.nodes),
                               control_kinds=NODE_REPORTS, max_control=None)
        self.mailbox.on_stranger = self._stranger
        self.ep.senders.on_spoofed = self._spoofed  # a join with another node's key
        self._stopping = False
        self._stop_requested = False  # by the user (--target-accuracy, the API)
        self._stop_all = False  # every node, now
        self._stop_sent = self._finish_sent = False

    def request_stop(self) -> None:
        """End the run early: gossip nodes stop (a round cut short is not recorded) and
        say bye; a coordinator finishes its round and hands out the final models."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        """Whether the run is being ended early: asked to (``request_stop``), or
        interrupted (Ctrl-C, SIGTERM, an error: ``shutdown``)."""
        return self._stop_requested or self._stopping

    def _alive(self) -> bool:
        return not self._stopping

    def _wait_for(self, state: str, kinds: set, timeout: float) -> None:
        """Handle start-up messages until every node is in ``state``; what has
        arrived is handled in one batch, so a thousand nodes cost no more checks
        than eight."""
        deadline, last_beat = time.monotonic() + timeout, time.monotonic()
        while True:
            if self.watch_signals:
                signals.check()  # a Ctrl-C whose exception was lost
            # joined: and reached (--listen), so that the configs go out to live nodes only
            waiting = [h for h in self.nodes.values() if h.state != state
                       or (state == "joined" and self.watch.never_up(h.id))]
            if not waiting:
                return
            # nodes started elsewhere, or placed by Ray, join at any time: those that joined
            # first hear from the launcher while it waits for the rest (their start
            # time-outs count from its last word)
            remote = self.listen or self.backend is not None
            if remote and time.monotonic() - last_beat > START_BEAT_S:
                last_beat = time.monotonic()
                self._heartbeat(("joined", "ready"))
            if time.monotonic() > deadline:
                raise ClusterError(f"{len(waiting)} node(s) not {state} after {timeout:.0f} s: "
                                   f"{[h.label for h in waiting[:5]]}{self._refusals()}")
            self._take(kinds, 0.5)
            self._say_refused_handshakes()
            self.watch.poll(time.monotonic())  # read, so that its queue never fills
            if state == "joined":
                self._unjoin_lost()
            else:
                self._fail_lost_while_starting(time.monotonic())
            failed = [h for h in self.nodes.values() if h.state == "failed"]
            if failed:
                raise ClusterError(f"node {failed[0].label!r} failed: {failed[0].reason}")
            gone = self._exited()
            for h in waiting:
                if h.id in gone and h.state not in ("done", "failed"):
                    why = getattr(h.runner, "error", lambda: None)()  # Ray says why
                    h.state = "failed"
                    h.reason = "exited during start-up" + (f": {why}" if why else "")
                    raise ClusterError(f"node {h.label!r} {h.reason}")

    def _barrier(self) -> None:
        """join from all → config to each → ready from all → start."""
        t0 = time.monotonic()
        self._wait_for("joined", {"join"}, self.start_timeout)
        t1 = time.monotonic()
        self.write_nodes_json()
        self.t_configs = time.monotonic()
        for spec in self.specs:
            self.ep.send(spec.id, "config", **config_fields(self._config(spec)))
        self._wait_for("ready", {"ready"}, self.start_timeout)
        for h in self.nodes.values():
            self.ep.send(h.id, "start")
        self.t_start = time.monotonic()
        if self.restart_limit > 0 and self.backend is None and not (self.listen
                                                                     or self._threads):
            warm_restarts()  # once the nodes run: it costs a start-up's imports
        self.write_nodes_json()  # every node ready: the states while the rounds run
        self.log(f"{len(self.nodes)} nodes joined in {t1 - t0:.1f} s, connected to their "
                 f"neighbours and ready {self.t_start - t1:.1f} s later")

    def _monitor(self) -> None:
        """Relay records until every node is done or failed."""
        last_beat, last_news = 0.0, time.monotonic()
        silence_limit = max(self.SILENCE_S, 6 * self.round_timeout)
        while any(h.state not in ("done", "failed") for h in self.nodes.values()):
            if self.watch_signals:
                signals.check()  # a Ctrl-C or SIGTERM whose exception was lost
            now = time.monotonic()
            if now - last_beat > HEARTBEAT_S:  # a finished node waits for its stop, and
                self._heartbeat(("ready", "done"))  # tells a silent launcher from a slow one
                last_beat = now
            if self._closer_done_long_ago(now):
                self._stop_all = True  # e.g. a worker offline when the run ended
            self._send_stops()
            if self._take({"metrics", "bye", "error", "join", "ready", "weights"},
                          self._wait_s(now)):
                last_news = now  # all that is here: a node's bye may follow its exit
            self.between()
            gone = self._exited()
            self._died_all([h for h in self.nodes.values() if h.id in gone
                            and h.state in ("ready", "joined", "restarting")])
            self._fail_stopped_stragglers(now)
            self._fail_unplaced(now)
            self._fail_lost_connections(now)
            self._fail_signalled(now)
            if now - last_news > silence_limit:
                self._fail_silent(silence_limit)

    def _heartbeat(self, states: tuple) -> None:
        """A heartbeat to every node in one of ``states``."""
        for h in self.nodes.values():
            if h.state in states:
                self.ep.send(h.id, "heartbeat")

    def _address_for(self, node, peer) -> str:
        """Where ``node`` reaches ``peer``: its inproc address when both are actors of
        the same host process (same host and pid), else its data address."""
        a, b = self.nodes[node], self.nodes[peer]
        if b.local and (a.host, a.pid) == (b.host, b.pid):
            return b.local
        return b.address

    def _take(self, kinds: set, timeout: float) -> bool:
        """Handle what the nodes sent, waiting up to ``timeout`` s for the first message;
        True if any came.  A Ctrl-C or SIGTERM meanwhile is raised once they are handled
        (:func:`~p2pfl.signals.deferred`): a record taken off the socket is not lost."""
        with signals.deferred(self.watch_signals):
            msg = self.mailbox.poll_control(timeout)
            got = msg is not None
            while msg is not None:
                self._handle(msg, kinds)
                if self.watch_signals and signals.pending():  # the rest stays queued
                    break
                msg = self.mailbox.poll_control(0.0)
        return got

    def _handle(self, msg, kinds: set) -> None:
        h = self.nodes.get(msg.src)
        if h is None or msg.kind not in kinds | {"error", "join"}:
            self.ep.counters.drop("unexpected_control")
            return
        if msg.kind == "join":  # admission.py: taken, or refused and told why
            if self._admit(h, msg, starting="join" not in kinds) and self.t_start is None:
                self.on_message(h, msg)
            return
        late = h.state == "restarting" and msg.kind != "metrics"  # the dead one's last words
        if (msg.route != h.route or late) and not self._unbound_report(h, msg):
            self.ep.counters.drop("other_process")  # a process refused, replaced, dead, or
            return  # of an earlier run (reconnected to this port), or one not joined yet
        if msg.kind == "ready" and self.t_start is not None:  # rejoined
            h.state = "ready"
            for j in self._spec[h.id].peers:  # before its start: which peers died meanwhile
                if self.nodes[j].state == "failed":
                    self._tell_gone(self.nodes[j], h.id)
                elif self.nodes[j].state == "done":  # finished: it answers nothing more
                    self.ep.send(h.id, "peer", meta={"id": j, "gone": True})
            self.ep.send(h.id, "start", meta={"elapsed": time.monotonic() - self.t_start})
            if self._stop_sent:
                self.ep.send(h.id, "stop")
            elif h.id == self.closer:
                self._finish_sent = False  # a replacement is asked to finish again
            return
        if msg.kind == "weights":
            self._save_weights(h, msg)
            return
        if msg.kind in ("metrics", "bye") and not self._checked(h, msg):
            return  # not one well-formed record: nothing to hand on
        if msg.kind == "ready":
            h.state = "ready"
        elif msg.kind == "metrics":
            h.last_round = max(h.last_round, msg.round)
            h.offline = msg.meta["records"][-1].get("offline") is True
        elif msg.kind == "bye" and "signal" in msg.meta:  # a p2pfl node stopped mid-run
            self._signalled(h, msg.meta)
        elif msg.kind == "bye" and not h.said_bye(msg.meta):
            self.log(f"node {h.label!r} finished after it failed ({h.reason}); "
                     "its counters are kept, and it stays failed")
        elif msg.kind == "error":
            reason = msg.meta.get("reason")  # only a string is shown: str() of a deeply
            reason = reason[:2000] if isinstance(reason, str) else "unknown error"  # nested
            if not self._waits_again(h, reason):  # value would raise RecursionError here
                self._fail(h, reason)
            return
        self.on_message(h, msg)

    # --------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop every node: ask, wait briefly, terminate, kill.  Idempotent.  Nodes
        that had not finished (an interrupted run, a failed start) are ``stopped``."""
        self._stopping = True
        running = {h.id for h in self.nodes.values() if h.state == "ready"}
        for h in self.nodes.values():
            if h.state not in ("done", "failed"):
                h.state = "stopped"
        if self.ep is not None:
            for h in self.nodes.values():
                if h.control and not h.exited():  # a message to a gone node would linger
                    # cut: stopped mid-run (a node of its own then exits non-zero)
                    self.ep.send(h.id, "stop", meta={"cut": h.id in running})
        self._kill_unanswering()  # processes only: a thread cannot be killed
        deadline = time.monotonic() + 5.0
        if self.ep is not None and self.t_start is not None:
            self._collect_byes(running, deadline)  # their counters and last records
        self._reap(deadline)
        stop_restarts()  # after the nodes it started
        if self.ep is not None:
            self.control_bytes = self.ep.counters.total("sent") + self.ep.counters.total("received")
            self.dropped = dict(sorted(self.ep.counters.dropped.items()))
            self.watch.close()
            self.ep.close(linger=0.5)
            self.ep = None
        if self.ctx is not None:
            threads = [h.runner for h in self.nodes.values()
                       if isinstance(h.runner, threading.Thread)]
            for t in threads:
                t.join(max(0.05, deadline + 25.0 - time.monotonic()))
            if not threads:
                self.ctx.destroy(linger=0)  # only this thread has sockets here
            elif not any(t.is_alive() for t in threads):
                self.ctx.term()  # a thread still inside a socket call would block term()
            self.ctx = None
        if self.backend is not None:
            self.backend.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def write_nodes_json(self) -> None:
        rows = [{"id": h.id, "label": h.label, "address": h.address, "control": h.control,
                 "pid": h.pid, "host": h.host, "state": h.state,
                 "model": self._spec[h.id].learn.model} for h in self.nodes.values()]
        if self.backend is not None:
            for row, h in zip(rows, self.nodes.values()):
                row["ray_node"] = h.ray_node
        if self.keys is not None:  # public keys only: a secret key never leaves memory
            for row in rows:
                row["public_key"] = self.keys.z85(row["id"])
        path = os.path.join(self.out_dir, "nodes.json")
        try:
            write_json_atomic(path, rows)
            self.write_errors.pop(path, None)
        except OSError as exc:  # a full disk: the run goes on; its end says so
            self.write_errors[path] = exc

    @property
    def write_error(self) -> OSError | None:
        """The first result file that could not be written and still is not."""
        return next(iter(self.write_errors.values()), None)
