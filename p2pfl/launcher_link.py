"""A node's side of its link to the launcher: waiting for its words, telling it how the
node ends, and finding it gone.

The launcher answers a join with a heartbeat, sends the config and the start, then a
heartbeat to every running or finished node each :data:`HEARTBEAT_S` (and before the
start to each remote node that joined, each :data:`START_BEAT_S`: a node's start
time-out counts from the launcher's last word, so that one that joined first waits
while the launcher waits for the others).  A node takes
its launcher for gone when nothing came from it for its silence limit (``p2pfl node
--lost-after``; by default 4 start time-outs: a vanished host, a hung launcher), or
when, once the launcher was reached, the node's connection to it has been down
:data:`LOST_AFTER_S` (the launcher's process died: its host refuses the reconnection;
or it is stopped or cut off: the connection's ZMTP heartbeats, every
:data:`HEARTBEAT_S`, went unanswered; ``p2pfl node --lost-after`` sets both limits).
The launcher's own rule is alike (``supervision.py``): it fails a remote node whose
connection, with heartbeats too, has been down its own ``--lost-after`` (with
``--restart``, at least a start time-out).
"""

from __future__ import annotations

import sys
import time

import msgpack

from . import signals
from .model_files import state_fields
from .runtime import LAUNCHER, Runtime
from .transport import Endpoint, Mailbox
from .transport.liveness import ConnectionWatch

__all__ = ["HEARTBEAT_S", "START_BEAT_S", "LAUNCHER_SILENT_S", "LOST_AFTER_S", "LauncherLost",
           "await_message", "await_config", "never_reached", "await_stop", "tell_interrupted",
           "send_weights", "LauncherCheck"]

#: How often the launcher sends each running or finished node a heartbeat.
HEARTBEAT_S = 2.0
#: How often the launcher sends a heartbeat to each remote (or Ray) node that joined,
#: while it waits for the others to join and be ready.
START_BEAT_S = 0.5
#: A finished node whose launcher sent nothing for this long takes it for gone: its
#: final counters and last records did not reach anyone.
LAUNCHER_SILENT_S = 5 * HEARTBEAT_S
#: A connection between a node and its launcher that stays down this long is lost:
#: the launcher fails the node (``--lost-after`` of ``p2pfl cluster --listen``), and a
#: node that had reached its launcher gives up (``--lost-after`` of ``p2pfl node``).
LOST_AFTER_S = 10.0


class LauncherLost(RuntimeError):
    """The launcher stopped answering: the node exits non-zero."""


def await_message(mailbox: Mailbox, kind: str, timeout: float, sliding: bool = False):
    """The launcher's next ``kind`` message within ``timeout`` s (TimeoutError if none).
    ``sliding``: the time-out counts from the launcher's last word (its heartbeats while
    it waits for other nodes) instead."""
    start = time.monotonic()
    while not mailbox.stopped:
        since = max(start, mailbox.last_control) if sliding else start
        left = since + timeout - time.monotonic()
        if left <= 0:
            break
        msg = mailbox.poll_control(left)
        if msg is not None and msg.kind == kind:
            return msg
    raise TimeoutError(f"no {kind!r} from the launcher")


def config_fields(meta: dict) -> dict:
    """The fields of a ``config`` message: the config as one msgpack frame.  In the
    header, whose 64 KiB limit a node drops a message past, a long schedule's (16 nodes,
    5,000 phases: 120 KB) or a node of some 1,600 neighbours failed the run after
    60 s ("no word from the launcher")."""
    return {"frames": [msgpack.packb(meta, use_bin_type=True)]}


def read_config(msg) -> dict:
    """A ``config`` message's config (:func:`config_fields`); ValueError if unusable."""
    try:
        meta = msgpack.unpackb(bytes(msg.frames[0]), raw=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - msgpack raises several unrelated types
        raise ValueError("the launcher's config is not a msgpack frame") from None
    if not isinstance(meta, dict):
        raise ValueError("the launcher's config is not a map")
    return meta


def await_config(mailbox: Mailbox, launcher: str, timeout: float, joined_at: float,
                 control: str, watch: ConnectionWatch | None, secure: bool = False) -> dict:
    """The launcher's config; a time-out says whether the launcher was ever heard, and
    if not, whether a connection to it ever came up (``watch``), or failed its handshake
    on CURVE: one side has it (``secure``: this node), the other not."""
    try:
        msg = await_message(mailbox, "config", timeout, sliding=True)
    except TimeoutError:
        if mailbox.stopped and not mailbox.lost:
            raise TimeoutError("the launcher ended the run before it started") from None
        if mailbox.last_control > joined_at:  # the heartbeat that answers a join came
            raise TimeoutError(f"no word from the launcher at {launcher} for {timeout:g} s "
                               "before the start") from None
        if never_reached(watch) and LAUNCHER in watch.mechanism_mismatch:
            raise TimeoutError(f"the launcher at {launcher} runs "
                               + ("without CURVE: start this node without --key, or the "
                                  "launcher with --keys" if secure else
                                  "with CURVE (--keys): start this node with --key "
                                  "KEYS/NAME.key_secret")) from None
        if never_reached(watch):  # a wrong address, or no launcher there
            raise TimeoutError(
                f"no connection to the launcher at {launcher} came up in {timeout:g} s: "
                "is it running, at that address (and with --key, of this run's keys)?"
                ) from None
        raise TimeoutError(  # an id it lacks or has, past --restart, an unknown key
            f"the launcher at {launcher} did not answer this join in {timeout:g} s: it "
            f"refused it or cannot reach {control} (see its log)") from None
    return read_config(msg)


def never_reached(watch: ConnectionWatch | None) -> bool:
    """Whether ``watch`` (None: not watched) saw no connection to the launcher come up."""
    if watch is None:
        return False
    watch.poll(time.monotonic())
    return watch.never_up(LAUNCHER)


def await_stop(mailbox: Mailbox, timeout: float) -> None:
    """Wait up to ``timeout`` s for the launcher's stop, after the bye."""
    deadline = time.monotonic() + timeout
    while not mailbox.stopped and time.monotonic() < deadline:
        mailbox.poll_control(min(1.0, max(0.0, deadline - time.monotonic())))


class LauncherCheck:
    """The node's liveness check of its launcher (``Mailbox.alive``, run about once a
    second): False once nothing came from it for ``silence_s``, or once the connection
    to it, up before, has been down ``down_s`` (with a ``watch`` of it).

    While the connection is down its own limit rules, so that a killed launcher is
    named as a lost connection, not as silence that began a heartbeat before the kill
    (which a loaded machine made the first to expire); silence still ends it past
    ``silence_s + down_s``, should the connection flap."""

    def __init__(self, mailbox: Mailbox, launcher: str, silence_s: float, down_s: float,
                 watch: ConnectionWatch | None = None) -> None:
        self.mailbox, self.launcher, self.watch = mailbox, launcher, watch
        self.silence_s, self.down_s = silence_s, down_s

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.watch is not None:
            self.watch.poll(now)
        silent = now - self.mailbox.last_control
        if self.watch is not None and self.watch.is_down(LAUNCHER):
            return not self.down(now) and silent < self.silence_s + self.down_s
        return silent < self.silence_s

    def down(self, now: float | None = None) -> bool:
        """Whether the connection to the launcher, up before, has been down too long."""
        now = time.monotonic() if now is None else now
        return self.watch is not None and self.watch.down_for(LAUNCHER, now) > self.down_s

    def reason(self, finished: bool = False) -> str:
        """Why the launcher is taken for gone (``finished``: after the node's bye)."""
        what = (f"the connection to the launcher at {self.launcher} was down for "
                f"{self.down_s:g} s" if self.down() else
                f"no word from the launcher for {self.silence_s:.0f} s")
        if finished:
            return f"{what} after this node's last round: its records may be lost"
        return f"{what}: it is gone, and this node's records with it"


def tell_interrupted(ep: Endpoint, runtime: Runtime | None, running,
                     exc: KeyboardInterrupt) -> None:
    """Tell the launcher that this node stops on a signal, instead of leaving it to
    find a lost connection ``--lost-after`` seconds later
    (``benchmarks/stopped_remote.py --signal INT``).  Mid-run (``running``: the role)
    it says bye after its last records, with its final counters and the signal: the
    launcher fails it a moment later, unless the same signal stops the launcher too
    (a whole process group's Ctrl-C, a batch system's cancel), when it is stopped as
    the rest.  Before the start, the start fails at once, with the reason.  What is
    sent leaves while the endpoint closes (up to 2 s, then it is dropped)."""
    name = signals.name_of(exc)
    if running is None:
        ep.send(LAUNCHER, "error", meta={"reason": signals.STOPPED_BY[name]})
        return
    try:
        runtime.flush()  # the rounds it completed are recorded
        final = running.final_report()
    except Exception:  # cut anywhere by the signal: the launcher is told all the same
        final = {"node": runtime.id}
    ep.send(LAUNCHER, "bye", meta={**final, "signal": name})


def send_weights(ep: Endpoint, node) -> None:
    """``--save-models``: the node's final model to the launcher, which writes it
    (:mod:`~p2pfl.model_files`); sent before the bye.  A role with no model of its own
    (a coordinator) sends none.  A model that cannot be sent is said, not sent: saving
    never fails a node that finished its run."""
    try:
        state = node.final_state()
        if state is None:
            return
        fields = state_fields(state)
    except Exception as exc:  # a module's extra state, a dtype the wire lacks, ...
        print(f"p2pfl node {ep.node_id}: model not saved: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        return
    ep.send(LAUNCHER, "weights", **fields)
