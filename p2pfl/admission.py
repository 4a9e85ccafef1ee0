"""Which joins the launcher takes, and what the process of a refused one is told.

A mixin of :class:`~p2pfl.cluster.Launcher`, which owns the state these methods
read (node handles, specs, the endpoint).  A node's connection to the launcher
carries a routing id of its process (:func:`~p2pfl.transport.sockets.process_identity`),
so the launcher hears every process that claims a node id, and keeps the one it
took (``NodeHandle.route``); what the others send is dropped as ``other_process``, and
so is what a process sends for a node before its join (one of an earlier run whose
connection found this launcher's port), but for why it could not bind.

A join is refused when:

- its node runs another version of p2pfl (the spec it would get, and the meaning of
  the protocol, may differ), or it lacks the node's addresses;
- no node of the run has its id;
- before the start, another process has joined with its id and is still connected
  (``--listen``: one whose connection is down was restarted by hand, and is replaced);
- every node has joined, and the run is starting;
- mid-run, its node may not rejoin: the run takes no restarts, the node is not
  running, restarting or failed, it runs and the launcher started it (only a remote
  node is restarted by hand), or it was restarted ``--restart`` times already.

A refused process is told why, over a connection of its own
(:meth:`~p2pfl.transport.endpoint.Endpoint.send_once`): ``p2pfl node`` then exits at
once with status 2 and the launcher's reason, instead of timing out.  The launcher
logs each refusal once per sender.  A remote node restarted by hand mid-run replaces
its old process, which is told to stop (it may still run, unseen: a host cut off): it
does nothing more (:class:`~p2pfl.transport.mailbox.Refused`), so that a replaced
coordinator hands out no final models.
"""

from __future__ import annotations

import time

import zmq

from .addresses import tcp_address
from .errors import ClusterError, UsageError
from .node_handle import NodeHandle
from .transport.endpoint import SCHEMES
from .transport.sockets import identity
from .version import __version__
from .launcher_link import HEARTBEAT_S

__all__ = ["Admission"]

#: Refusals logged and answered, at most: a flood of joins costs a bounded amount.
MAX_REFUSALS = 64
#: Joins answered a key that claim another node's id (``Admission._spoofed``).
MAX_SPOOF_ANSWERS = 2
#: The drop reasons of handshakes the launcher's CURVE sockets refused.
HANDSHAKE_REFUSALS = ("unknown_key", "plaintext_peer", "handshake_failed")


def _connectable(address) -> bool:
    """Whether ``address`` is one ZeroMQ takes to connect to (a bad one raises there):
    ``tcp://HOST:PORT``, or an ipc or inproc name."""
    if not isinstance(address, str) or not address.isprintable() or len(address) > 1024:
        return False
    scheme, sep, rest = address.partition("://")
    if scheme != "tcp":
        return scheme in SCHEMES and bool(sep and rest)
    try:
        tcp_address(address, "address")
    except UsageError:
        return False
    return True


class Admission:
    """The launcher's handling of joins; see the module docstring."""

    def _admit(self, h: NodeHandle, msg, starting: bool = False) -> bool:
        """Take ``msg``, a join for node ``h``, or refuse it; True if taken.  ``starting``:
        every node has joined, and the run is starting without another one."""
        refusal = self._refusal(h, msg, starting)
        if refusal is not None:
            counter, why = refusal
            self.ep.counters.drop(counter)
            self._refuse(msg, why)
            return False
        try:
            if self.t_start is None:  # its first join, or its old process is gone (_refusal)
                self._join(h, msg)
                self._say_joined(h)
                return True
            replacing = h.state == "ready"  # its old process may still run: told to stop
            by_hand = h.state != "restarting"  # restarted by hand (p2pfl node --connect --id N)
            if replacing:  # to the old process, by its route: the new one ignores it
                self.ep.send(h.id, "stop", meta={"refused": f"node {h.label!r} was started "
                                                 "again elsewhere; this process is replaced",
                                                 "route": h.route})
            self._join(h, msg, linger=2.0 if replacing else 0.0)
        except zmq.ZMQError as exc:  # e.g. an ipc path over the length limit
            self.watch.forget(h.id)
            self.ep.counters.drop("malformed_join")
            self._refuse(msg, f"the launcher cannot connect to its control address "
                              f"{msg.meta['control'][:200]!r}: {exc.strerror}")
            return False
        if by_hand:
            h.restarts += 1
            self.on_restart(h)
            self.log(f"node {h.label!r} was started again on {h.host or 'an unnamed host'}"
                     f"{f', pid {h.pid}' if h.pid else ''} (restart {h.restarts}/"
                     f"{self.restart_limit})")
        self._rejoined(h)
        return True

    def _refusal(self, h: NodeHandle, msg, starting: bool) -> tuple[str, str] | None:
        """The counter and the reason for refusing a join, or None to take it."""
        version = msg.meta.get("version")
        if version != __version__:
            theirs = (f"p2pfl {version}" if isinstance(version, str) and len(version) <= 32
                      else "another p2pfl version")
            return "other_version", (f"it runs {theirs}, the launcher p2pfl {__version__}; "
                                     "every host of a run needs the same one")
        if not (_connectable(msg.meta.get("address")) and _connectable(msg.meta.get("control"))):
            return "malformed_join", ("its join has no data and control addresses that "
                                      "ZeroMQ can connect to")
        if self.t_start is None:
            if self.listen and h.route and msg.route != h.route:
                self.watch.poll(time.monotonic())  # whether the one taken has died
            gone = self.listen and h.id in self.watch.down_since  # its process died
            if h.route and msg.route != h.route and not gone:
                return "id_taken", (f"node {h.label!r} has joined already, from host "
                                    f"{h.host or '(unknown)'}, pid {h.pid}")
            if starting and gone and h.state == "joined":
                return "unexpected_control", (
                    f"node {h.label!r} was lost after the run sent its configs, and cannot "
                    "join again before the start; the run fails (start it again)")
            if starting:
                return "unexpected_control", (f"node {h.label!r} has joined already, and the "
                                              "run is starting")
            return None
        if h.state == "ready" and not self.listen:  # the launcher restarts its own nodes
            return "unexpected_control", f"node {h.label!r} is running"
        if h.state not in ("restarting", "ready", "failed") or not self.restart_limit:
            return "unexpected_control", f"node {h.label!r} is {h.state}" + (
                "" if self.restart_limit else ", and the run takes no restarts")
        if h.state != "restarting" and h.restarts >= self.restart_limit:
            return "restart_limit", (f"node {h.label!r} was restarted {h.restarts} "
                                     "time(s), the --restart limit")
        return None

    def _join(self, h: NodeHandle, msg, linger: float = 0.0) -> None:
        """Record where node ``h`` is (its join has both addresses: :meth:`_refusal`),
        and connect to its control socket (the old connection's queue gets ``linger``
        seconds to leave)."""
        meta = msg.meta
        if self.listen:  # a remote node: the launcher sees no process exit, only a
            self.watch.forget(h.id)  # connection that ZMTP heartbeats find lost
            self.ep.reconnect(h.id, meta["control"], control=True, heartbeat_s=HEARTBEAT_S,
                              linger=linger, watch=lambda sock: self.watch.watch(h.id, sock))
        else:
            self.ep.reconnect(h.id, meta["control"], control=True, linger=linger)
        h.address, h.control, h.route = meta["address"], meta["control"], msg.route
        pid, host = meta.get("pid"), meta.get("host")  # what a node says of itself
        h.pid = pid if type(pid) is int and 0 < pid < 1 << 31 else h.pid
        h.host = host[:255] if isinstance(host, str) else None
        if h.host is not None and not h.host.isprintable():  # it reaches the launcher's log
            h.host = ascii(h.host)
        local = meta.get("local")
        h.local = local if isinstance(local, str) and local.startswith("inproc://") else None
        h.ray_node = meta["ray_node"] if isinstance(meta.get("ray_node"), str) else None
        self.ep.send(h.id, "heartbeat")  # the node learns that it reached the launcher
        h.state = "joined"

    def _say_joined(self, h: NodeHandle) -> None:
        """A remote node's join before the start, said as it comes (who, from where, and
        how many of the run's nodes have joined); nodes the launcher started are not."""
        if self.listen:
            joined = sum(n.state == "joined" for n in self.nodes.values())
            pid = f", pid {h.pid}" if h.pid else ""
            self.log(f"node {h.label!r} joined from {h.host or 'an unnamed host'}{pid} "
                     f"({joined} of {len(self.nodes)})")

    def _unjoin_lost(self) -> None:
        """Before the start, a remote node whose connection to the launcher dropped (its
        process died) is waited for again: its new process, started by hand, joins.  If
        the connection comes back first (a blip), the node counts as joined again."""
        for h in self.nodes.values():
            down = h.id in self.watch.down_since
            if h.state == "joined" and down:
                h.state = "spawned"
                what = (f"cannot connect to node {h.label!r}'s control address {h.control}"
                        if self.watch.never_up(h.id) else
                        f"lost its connection to node {h.label!r}")
                self.log(f"the launcher {what} before the start; waiting for it to join "
                         "again")
            elif h.state == "spawned" and h.route and not down:  # unjoined, and back
                h.state = "joined"

    def _waits_again(self, h: NodeHandle, reason: str) -> bool:
        """Whether the error that a remote node sent before the configs went out (it gave
        up: a start time-out, or a launcher that cannot reach its control address) leaves
        it waited for again, as one whose process died then: a new process of it,
        started by hand, joins (its error failed the whole run before)."""
        if not self.listen or self.t_configs is not None or h.state not in ("joined",
                                                                               "spawned"):
            return False
        h.state, h.route = "spawned", b""  # not taken back for joined by _unjoin_lost
        self.watch.forget(h.id)  # its process is gone: a new one connects anew
        self.log(f"node {h.label!r} gave up before the start ({reason}); waiting for it to "
                 "join again")
        return True

    def _say_refused_handshakes(self) -> None:
        """With --keys, say as they come the handshakes refused before the start (a
        node without --key, or with another run's): the start time-out said it alone."""
        if self.keys is None:
            return
        self.ep.count_refusals()
        for reason in HANDSHAKE_REFUSALS:
            n = self.ep.counters.dropped.get(reason, 0)
            if n > self._said_handshakes.get(reason, 0):
                if not self._said_handshakes.get(reason):
                    self.log(f"the launcher refused a handshake ({reason.replace('_', ' ')})"
                             ": a node without --key, or with keys of another run?")
                self._said_handshakes[reason] = n

    def _refusals(self) -> str:
        """Why nodes may not have joined: joins refused (the first one's reason, which a
        quiet run did not log), control addresses the launcher could not connect to,
        handshakes the launcher's sockets refused."""
        said = ""
        if self._refused:
            (src, _), reason = next(iter(self._refused.items()))
            said = f"; {len(self._refused)} join(s) refused, the first from id {src!r}: {reason}"
        unreached = [h.label for h in self.nodes.values()
                     if h.route and self.watch.never_up(h.id)]
        if unreached:
            said += (f"; the launcher cannot connect to the control address of node(s) "
                     f"{unreached[:5]}: check their --advertise and --host")
        self.ep.count_refusals()
        why = {k: n for k, n in self.ep.counters.dropped.items() if k in HANDSHAKE_REFUSALS}
        if not why:
            return said
        shaken = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(why.items()))
        return f"{said}; the launcher refused handshakes ({shaken}): check the nodes' keys"

    def _fail_lost_while_starting(self, now: float) -> None:
        """Once the configs went out, a remote node whose connection to the launcher has
        been down ``--lost-after`` cannot come back before the start (its peers were given
        its address, and a new process for it is refused): the start fails now, not at
        its time-out."""
        for h in self.nodes.values():
            if h.state == "joined" and self.watch.down_for(h.id, now) > self.lost_after:
                raise ClusterError(f"node {h.label!r} lost its connection to the launcher "
                                   f"for {self.lost_after:g} s during start-up")

    @staticmethod
    def _unbound_report(h: NodeHandle, msg) -> bool:
        """Whether ``msg`` is the one message a node's process sends before it joins:
        why it could not bind, from an endpoint of its own with the plain routing id;
        also while its node is restarting (the dead process's route is kept until the
        new one joins, so that its last records still count)."""
        return (msg.kind == "error" and msg.route == identity(h.id)
                and (not h.route or h.state == "restarting"))

    def _stranger(self, msg) -> None:
        """A message from an id no node of the run has: a join is refused."""
        if msg.kind == "join":
            self._refuse(msg, "no node of this run has that id")

    def _refuse(self, msg, why: str, owner=None) -> None:
        """Log once per sender why its join was refused, and tell its process (with
        CURVE, at the key of ``owner``, the node whose key it holds: ``msg.src``'s by
        default)."""
        key = (msg.src, msg.route)
        if len(self._refused) >= MAX_REFUSALS or key in self._refused:
            return
        self._refused[key] = why
        self.log(f"a join from node id {repr(msg.src)[:64]} was refused: {why}")
        control = msg.meta.get("control")
        if isinstance(control, str) and control.partition("://")[0] in SCHEMES:
            # the refused process's route: a node at that address that is another
            # process (a join may name any control address) ignores it
            self.ep.send_once(msg.src if owner is None else owner, control, "stop",
                              meta={"refused": why, "route": msg.route})

    def _spoofed(self, msg, owner) -> None:
        """A message whose CURVE key is node ``owner``'s names another node (dropped and
        counted as ``spoofed`` by the endpoint).  A join is answered, so that its process
        exits with the reason instead of waiting out its time-out unheard: the usual
        case is ``p2pfl node --key`` of a labelled node with the wrong ``--id``.  At most
        MAX_SPOOF_ANSWERS a key (its holder chooses the ids it claims, and would use up
        the refusals that other nodes' joins are owed), and never to the control
        address of a node that joined (a copied key would stop that node)."""
        h = self.nodes.get(owner)
        if msg.kind != "join" or h is None:
            return
        if self._spoof_answers.get(owner, 0) >= MAX_SPOOF_ANSWERS or any(
                msg.meta.get("control") == n.control for n in self.nodes.values()):
            return
        self._spoof_answers[owner] = self._spoof_answers.get(owner, 0) + 1
        self._refuse(msg, f"its key is node {h.label!r}'s (id {owner}), not node id "
                          f"{repr(msg.src)[:64]}'s: start it with --id {owner}", owner)
