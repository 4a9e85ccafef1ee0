"""What the launcher does when nodes fail, stop, or are stopped while the run goes on.

A mixin of :class:`~p2pfl.cluster.Launcher`, which owns the state these methods
read (node handles, specs, the endpoint, the stop flags).  A node that dies is
restarted (``--restart``) or failed; a failed node's peers are told it is gone,
and a restarted one learns which of its peers died meanwhile.  A requested stop
reaches the coordinator alone while it runs, so that it can finish its round.
A local process found stopped, once every other node is done, is failed rather
than waited for.
"""

from __future__ import annotations

import time

from . import signals
from .labels import first_few
from .launcher_link import config_fields
from .model_files import checked_state, write_state
from .node_handle import NodeHandle, ended
from .procfs import process_state
from .reports import checked_final, checked_records
from .runtime import CLOSER_GRACE_S
from .spawn import respawn
from .transport.availability import Availability

__all__ = ["Supervision", "process_state"]

#: A node that said it stops on a signal has failed this long after, unless the run was
#: stopped meanwhile: the same signal may have reached the launcher too.
SIGNALLED_GRACE_S = 1.0


def _by_process(nodes) -> list:
    """``nodes`` grouped by the process (or thread, or Ray actor) that runs them: one
    group for the actors of a host process, one a node otherwise."""
    groups: dict = {}
    for h in nodes:
        groups.setdefault(id(h.runner), []).append(h)
    return list(groups.values())


class Supervision:
    """The launcher's fault handling; see the module docstring."""

    _exits_seen = 0  # the endpoint's count of watched processes that ended, last looked at
    _exit_recheck_until = 0.0  # one ended and is not reaped yet: look often until then

    def _send_stops(self) -> None:
        """A requested stop goes to the closer (the coordinator) alone while it runs:
        it finishes its round and hands every worker the final model, as after its
        last round.  Without a closer every node stops where it is and says bye."""
        closer = self.nodes.get(self.closer) if self.closer is not None else None
        if self._stop_requested and not self._finish_sent and not self._stop_all:
            if closer is None or closer.state in ("failed", "stopped"):
                self._stop_all = True
            elif closer.state == "done":  # it ended the run itself (its last round, or
                # --target-accuracy): a stop now would reach a worker before its final
                # model; they end with it, or a grace later (_closer_done_long_ago)
                self._finish_sent = True
            elif closer.state == "ready":
                self.ep.send(closer.id, "stop", meta={"finish": True})
                self._finish_sent = True
            # else it is being restarted: it is asked once it is ready again
        if self._stop_all and not self._stop_sent:
            for h in self.nodes.values():
                self.ep.send(h.id, "stop")
            self._stop_sent = True

    def _exited(self) -> set:
        """Nodes whose process or thread ended (checked at most every 0.2 s, and at once
        when a watched process ends; host processes are shared by many nodes and checked
        once each)."""
        now = time.monotonic()
        exits = self.ep.inbox.exits if self.ep is not None else 0
        if exits != self._exits_seen:  # its descriptors are closed before it can be
            self._exits_seen = exits  # reaped: look again, often, for a little while
            self._exit_recheck_until = now + 0.25
        if now >= self._next_exit_check or now < self._exit_recheck_until:
            self._next_exit_check = now + 0.2
            runners = {id(h.runner): h.runner for h in self.nodes.values()
                       if h.runner is not None}
            # the dead runners themselves are kept, so their ids are never reused
            dead = {k: r for k, r in runners.items() if not r.is_alive()}
            if dead.keys() - self._dead.keys():
                self._exit_recheck_until = 0.0  # found
            self._dead = dead
        # by runner: a node restarted since the last check has a new, live one
        return {h.id for h in self.nodes.values()
                if h.runner is not None and self._dead.get(id(h.runner)) is h.runner}

    def _watch_exits(self, handles=None) -> None:
        """Have the endpoint wake the monitor when a node's process (or host process)
        ends: each local process's sentinel, once a process (threads and Ray's actors
        have none)."""
        runners = {id(h.runner): h.runner for h in (handles or self.nodes.values())}
        for runner in runners.values():
            sentinel = getattr(runner, "sentinel", None)
            if isinstance(sentinel, int):
                self.ep.inbox.watch_exit(sentinel)

    def _fail_stopped_stragglers(self, now: float) -> None:
        """A node whose process is stopped (SIGSTOP, a debugger) once every other node
        has finished can only hold the run: after a round time-out it has failed.
        Local processes are looked at in ``/proc`` (a node's own, or the host process
        of its actor with ``--in-process``; not a thread of the launcher's), Ray's by a
        task on their host (a stopped one held the run for the 120 s silence limit);
        not remote ones."""
        if self.listen or self._threads or now < self._next_stopped_check:
            return  # cheap: called between any two messages (1,024 actors: +15 % wall)
        self._next_stopped_check = now + 1.0
        running = [h for h in self.nodes.values() if h.state not in ("done", "failed")]
        if len(running) > len(self.nodes) // 2:
            return  # most nodes still running
        left = [h for h in running if h.state == "ready"]
        if len(left) != len(running):
            return
        if self.backend is None:
            stopped = [process_state(h.pid) == "T" for h in left]
        else:
            stopped = [s == "T" for s in self.backend.process_states(
                [(h.ray_node, h.pid) for h in left])]
        late = []
        for h, is_stopped in zip(left, stopped):
            if not is_stopped:
                h.stopped_since = None
            elif h.stopped_since is None:
                h.stopped_since = now
            elif now - h.stopped_since > self.round_timeout and all(stopped):
                late.append(h)
        self._fail_by_process(late, "is stopped, and every other node finished")

    def _fail_unplaced(self, now: float) -> None:
        """A new process started for a node that has not joined within a start time-out
        has failed (Ray could not place it once a host was lost: the run waited for
        it for ever)."""
        for h in self.nodes.values():
            if h.state == "restarting" and now - h.restarted_at > self.start_timeout:
                self._fail(h, f"its restarted process did not join in {self.start_timeout:g} s")
                stop = getattr(h.runner, "terminate", None)  # a process or Ray actor
                if stop is not None:
                    stop()

    def _fail_silent(self, silence_limit: float) -> None:
        """Nothing came from any node for ``silence_limit`` s: the running ones have
        failed, but not those offline (their availability keeps them silent: two
        neighbours offline together at the end were failed so), of which the launcher
        says once when they are back."""
        waiting = []
        for h in self.nodes.values():
            if h.state == "ready" and not h.offline:
                self._fail(h, f"silent for {silence_limit:.0f} s")
            elif h.state == "ready":
                waiting.append(h)
        if waiting and not self._said_offline:
            self._said_offline = True
            back = max(Availability(self._spec[h.id].availability).online_at(
                time.monotonic() - self.t_start) for h in waiting)
            names = ", ".join(str(h.label) for h in waiting[:5])
            self.log(f"node(s) {names} offline, by their availability until {back:.0f} s "
                     "of the run: waiting for them")

    def _fail_lost_connections(self, now: float) -> None:
        """A remote node (``--listen``) whose connection has been down ``--lost-after``
        (``launcher_link.LOST_AFTER_S`` by default) has failed: its process died (its
        host closed the connection) or its host is gone (ZMTP heartbeats went
        unanswered).  A short outage is ridden out; with ``--restart``, a start
        time-out, for a restart by hand.  A stopped process answers no heartbeat nor
        handshake, and is found so too; one whose ZeroMQ still answers while its Python
        hangs is found only by the run's silence limit."""
        if not self.listen:
            return
        self.watch.poll(now)
        limit = max(self.lost_after, self.start_timeout) if self.restart_limit \
            else self.lost_after
        for peer in list(self.watch.down_since):
            h = self.nodes.get(peer)
            # joined: rejoined mid-run, and not ready yet
            if h is None or h.state not in ("ready", "joined"):
                continue
            if self.watch.down_for(peer, now) > limit:
                self._fail(h, f"its connection was lost for {limit:g} s")
            elif self.restart_limit and h.restarts < self.restart_limit \
                    and self._said_down.get(h.id) != self.watch.down_since[peer]:
                self._said_down[h.id] = self.watch.down_since[peer]  # once an outage
                self.log(f"node {h.label!r} lost its connection; it fails in {limit:g} s "
                         f"unless started again (p2pfl node --connect ... --id {h.id})")

    def _signalled(self, h: NodeHandle, final: dict) -> None:
        """A `p2pfl node` stopped mid-run by Ctrl-C or SIGTERM said bye with its final
        counters and the signal (``launcher_link.tell_interrupted``).  Its counters are
        kept; it has failed :data:`SIGNALLED_GRACE_S` later (:meth:`_fail_signalled`),
        unless the run is stopped first: a signal to a whole process group (Ctrl-C in
        one terminal, a batch system's cancel) reaches the launcher a moment later, and
        then the node is stopped as the others are, not failed."""
        h.final = final
        if h.state == "ready":
            self._graces[h.id] = (time.monotonic() + SIGNALLED_GRACE_S,
                                  signals.STOPPED_BY[final["signal"]])

    def _fail_signalled(self, now: float) -> None:
        """Fail the nodes stopped by a signal whose grace ended while they were ready."""
        for node, (until, why) in list(self._graces.items()):
            if now >= until:
                del self._graces[node]
                if self.nodes[node].state == "ready":
                    self._fail(self.nodes[node], why)

    def _wait_s(self, now: float) -> float:
        """How long the monitor may wait for a message: half a second, or until the
        first grace of a node stopped by a signal ends."""
        if now < self._exit_recheck_until:  # a process ended and is not reaped yet
            return 0.005
        return max(0.0, min([0.5, *(until - now for until, _ in self._graces.values())]))

    def _closer_done_long_ago(self, now: float) -> bool:
        """Whether the nodes still running are to be stopped: the closer finished a
        grace period ago (time for a worker offline at the end to come back), or it
        failed for good, when nothing more can reach them (a run that may still see
        it restarted by hand waits)."""
        h = self.nodes.get(self.closer) if self.closer is not None else None
        if h is None or h.state not in ("done", "failed"):
            return False
        if h.state == "failed" and not (self.listen and self.restart_limit):
            return True
        if h.done_at is None:
            h.done_at = now
            for node in h.final.get("absent") or []:  # offline at the end: no final for them
                if node in self.nodes and self.nodes[node].state == "ready":
                    self.ep.send(node, "stop")
        return now - h.done_at > CLOSER_GRACE_S

    def _died_all(self, dead: list) -> None:
        """Nodes whose process ended mid-run (:meth:`_died`).  The actors of one host
        process (``--in-process``) fail together (:meth:`_fail_by_process`)."""
        for nodes in _by_process(dead):
            if len(nodes) == 1:
                self._died(nodes[0])
            else:
                self._fail_by_process(nodes, ended(nodes[0].runner))

    def _fail_by_process(self, nodes: list, why: str) -> None:
        """Fail ``nodes`` because their process ``why`` (its words: "is stopped", "was
        killed by SIGKILL before it finished"): one line a host process of several
        actors (a killed host logged "process exited without finishing" for each of its
        512 actors, and never which signal; a stopped one, 64 lines)."""
        for group in _by_process(nodes):
            if len(group) == 1:
                self._fail(group[0], f"its process {why}")
                continue
            r = group[0].runner
            self.log(f"host process {getattr(r, 'name', '?')} (pid {group[0].pid}) {why} "
                     f"with {len(group)} nodes running: they failed (node "
                     f"{first_few(h.label for h in group)})")
            for h in group:
                self._fail(h, f"its host process {why}", say=False)

    def _died(self, h: NodeHandle) -> None:
        """A node's process ended mid-run without a bye: while it ran (``ready``), or
        a restarted process before it was ready again (``restarting``, ``joined``),
        which would otherwise leave the run waiting for it for ever.  It is restarted
        while the limit allows, else it has failed."""
        if h.restarts < self.restart_limit and not self.listen:
            self._restart(h)
        elif h.state == "ready":
            self._fail(h, f"its process {ended(h.runner)}")
        else:
            self._fail(h, "its restarted process exited before it was ready")

    def _restart(self, h: NodeHandle) -> None:
        """Start a new process for a node that died; it rejoins (see :meth:`_rejoined`)."""
        h.restarts += 1
        h.state, h.restarted_at = "restarting", time.monotonic()  # its old route stays
        # until the new process joins
        self.log(f"node {h.label!r} died; restarting it ({h.restarts}/{self.restart_limit})")
        self.on_restart(h)
        if self.backend is not None:
            h.runner = self.backend.spawn(self.ep.address, h.id, self.start_timeout,
                                          here=h.id == self.closer)
            h.pid = None
            return
        respawn(h, self._address, self._how(), self._node_security(h.id))
        self._watch_exits([h])

    def _rejoined(self, h: NodeHandle) -> None:
        """A node joined mid-run (restarted here, or by hand on its host): its
        neighbours learn its new address, and it gets its spec, to catch up."""
        spec = self._spec[h.id]
        h.done_at = None  # a coordinator back: the closer's grace starts again when done
        self._graces.pop(h.id, None)  # its old process's last words
        h.final = {}
        for j in spec.peers:
            self.ep.send(j, "peer", meta={"id": h.id, "address": h.address})
        self.ep.send(h.id, "config", **config_fields(
            {**self._config(spec), "rejoin": True, "round": h.last_round}))
        self.write_nodes_json()

    def _collect_byes(self, running: set, deadline: float) -> None:
        """After a stop at shutdown (Ctrl-C, SIGTERM, an error mid-run): take the byes
        of the nodes that were ``running`` (ready), until each has said bye or ended,
        or the deadline.  A bye holds a node's final counters and follows its last
        records; the node stays ``stopped``."""
        def pending():  # exits are looked at every 0.2 s; a lost connection is not waited for
            if self.listen:
                self.watch.poll(time.monotonic())
            gone, lost = self._exited(), self.watch.down_since if self.listen else {}
            return [h for h in self.nodes.values() if h.id in running and not h.final
                    and h.id not in gone and h.id not in lost]

        while True:
            # decided before the last read: a bye that came before its node's connection
            # was seen lost is read all the same
            done = not pending() or time.monotonic() > deadline
            msg = self.mailbox.poll_control(0.0 if done else 0.05)
            while msg is not None:
                h = self.nodes.get(msg.src)
                taken = h is not None and (not h.route or msg.route == h.route)
                if taken and h.state == "stopped" and msg.kind == "weights":
                    self._save_weights(h, msg)  # a stopped node's model, before its bye
                elif taken and h.state == "stopped" and msg.kind in ("metrics", "bye") \
                        and self._checked(h, msg):
                    if msg.kind == "bye":
                        h.final = msg.meta
                    self.on_message(h, msg)
                msg = self.mailbox.poll_control(0.0)
            if done:
                return

    @property
    def _threads(self) -> bool:
        """Whether the nodes are threads of this process (``--transport inproc``)."""
        return self.in_process and self.scheme == "inproc"

    def _kill_unanswering(self) -> None:
        """At shutdown, kill the node processes that cannot say bye: a stopped one
        (SIGSTOP), and one whose nodes all failed (a host process of actors, one of
        which failed, still has the others' byes to send): they are not waited for."""
        for nodes in _by_process(self.nodes.values()):
            r = nodes[0].runner
            if hasattr(r, "kill") and r.is_alive() and (
                    all(h.state == "failed" for h in nodes)
                    or process_state(nodes[0].pid) == "T"):
                r.kill()

    def _reap(self, deadline: float) -> None:
        """At shutdown, wait for every runner until ``deadline``; then terminate the
        processes and Ray actors still alive, and kill those that outlive that."""
        for h in self.nodes.values():
            if h.runner is not None and h.runner.ident is not None:
                h.runner.join(max(0.05, deadline - time.monotonic()))
        for h in self.nodes.values():
            r = h.runner
            if hasattr(r, "terminate") and r.is_alive():  # a process or a Ray actor
                r.terminate()
                r.join(2.0)
                if r.is_alive():
                    r.kill()
                    r.join(2.0)

    def _checked(self, h: NodeHandle, msg) -> bool:
        """A ``metrics`` or ``bye`` message of ``h`` cut to what is well formed
        (:mod:`~p2pfl.reports`), in place; what was left out is counted as
        ``bad_report``.  False if a ``metrics`` message keeps no record."""
        if msg.kind == "bye":
            msg.meta, bad = checked_final(msg.meta, h.id)
        else:
            records, vector, bad = checked_records(msg.meta, msg.frames, h.id)
            msg.meta, msg.frames = {"records": records}, [] if vector is None else [vector]
        for _ in range(bad):
            self.ep.counters.drop("bad_report")
        return msg.kind == "bye" or bool(msg.meta["records"])

    @property
    def models_saved(self) -> int:
        """How many nodes have their final model in ``models/``."""
        return sum(h.saved_route is not None for h in self.nodes.values())

    def _save_weights(self, h: NodeHandle, msg) -> None:
        """A node's final model (``--save-models``), written as ``models/node-ID.pt``;
        one not asked for, a second from the same process, one of a node not running,
        or a malformed one is dropped and counted as ``bad_report``."""
        asked = self.save_models and h.state in ("ready", "stopped") \
            and h.saved_route != msg.route
        state = checked_state(msg) if asked else None
        if state is None:
            self.ep.counters.drop("bad_report")
            return
        try:
            write_state(self.out_dir, h.id, state)
        except OSError as exc:  # a full disk: the run's end says so (write_error)
            self.log(f"node {h.label!r}: its model could not be written: {exc}")
            self.write_errors.setdefault(exc.filename or h.id, exc)
            return
        h.saved_route = msg.route

    def _fail(self, h: NodeHandle, reason: str, say: bool = True) -> None:
        if h.state in ("done", "failed"):
            return
        h.state, h.reason = "failed", reason
        if say:
            self.log(f"node {h.label!r} failed: {reason}")
        if self.t_start is not None and self.ep is not None:
            for j in self._spec[h.id].peers:
                if self.nodes[j].state == "ready":
                    self._tell_gone(h, j)
        self.on_message(h, None)

    def _tell_gone(self, h: NodeHandle, peer) -> None:
        """Tell ``peer`` that ``h`` failed for good, so that it waits for it no more: a
        dead worker would cost every round its time-out, a dead neighbour a catch-up.
        Not while a node may still be restarted by hand (``--listen`` with restarts)."""
        if not (self.listen and self.restart_limit):
            self.ep.send(peer, "peer", meta={"id": h.id, "gone": True})
