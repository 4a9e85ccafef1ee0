"""Where a message a mailbox receives goes (:class:`Routing`, the routing half of
:class:`~p2pfl.transport.mailbox.Mailbox`).

A command goes to the actor (or changes its state: ``stop``, a peer that moved); a
request is kept per sender; a data message is kept under its kind and round, within
the round window, or queued per sender without a round barrier; each message of a
peer says that it is present (and at which round), or that it left.  Whatever does
not fit is dropped, and the drop is counted with its reason.
"""

from __future__ import annotations

import time

from .endpoint import COMMAND_KINDS
from .wire import Message

__all__ = ["Routing", "DATA_KINDS", "REQUEST_KINDS", "Refused"]

#: Kinds that carry round data between nodes; all others are control messages.
DATA_KINDS = frozenset({"hello", "model", "update", "softlabels", "control", "catchup"})
#: Requests between peers: kept per sender (latest only) whatever their round.
REQUEST_KINDS = frozenset({"resync", "pull"})
#: While a node catches up, each peer's messages of each kind beyond the window it had
#: are kept up to this many (its latest rounds: where an honest one is now).
MAX_KEPT_AHEAD = 16


class Refused(RuntimeError):
    """The launcher refused this node's join, or replaced its process by another, and
    said why: raised wherever the node waits, so that it does nothing more (a replaced
    coordinator must not hand out final models); the node exits with status 2."""


class Routing:
    """The routing rules of a :class:`~p2pfl.transport.mailbox.Mailbox`, whose state
    (its peers, round window, kept messages, presence sets) they read and change."""

    def _route(self, msg: Message) -> None:
        counters = self.endpoint.counters
        if (msg.kind in COMMAND_KINDS) != (msg.channel == "control"):
            counters.drop("wrong_channel")  # commands on the control socket, nothing else
            return
        if msg.kind not in COMMAND_KINDS and self.peers is not None and msg.src in self.peers:
            self._presence(msg)  # kept up to date even while we are offline ourselves
        if msg.kind == "leave":
            if self.peers is None or msg.src not in self.peers:
                counters.drop("unknown_sender")
            return
        if self.offline and msg.kind not in COMMAND_KINDS:
            counters.drop("offline")  # an offline node neither sends nor receives
            return
        if msg.kind in REQUEST_KINDS:
            if self.peers is not None and msg.src in self.peers:
                self._requests[msg.kind][msg.src] = msg
            else:
                counters.drop("unknown_sender")
            return
        if msg.kind not in DATA_KINDS:
            if msg.kind not in self.control_kinds:  # a node takes commands, the launcher
                counters.drop("unexpected_kind")  # reports (join, metrics, bye...)
                return
            if msg.src not in self.control_sources:
                counters.drop("control_from_stranger")
                if self.on_stranger is not None:
                    self.on_stranger(msg)
                return
            self.last_control = time.monotonic()
            if msg.kind == "stop" and msg.meta.get("finish") is True:
                self.finish = True  # end the run after the round in progress
            elif msg.kind == "stop":
                self.cut = self.cut or msg.meta.get("cut") is True  # mid-run: not finished
                why = msg.meta.get("refused")
                if isinstance(why, str) and msg.meta.get("route") != self.own_route:
                    counters.drop("refusal_of_another")  # for another process of our id
                    return
                self.stopped = True
                if isinstance(why, str):
                    raise Refused(f"the launcher refused this node: {why[:500]}")
            elif msg.kind == "peer":  # a neighbour was restarted elsewhere, or died
                self._moved(msg.meta)
            elif msg.kind != "heartbeat":
                self.control.append(msg)
            return
        if self.peers is None:
            if self._unconfigured >= self.max_unconfigured:
                counters.drop("unconfigured_overflow")
                return
            self._unconfigured += 1
        elif msg.src not in self.peers:
            counters.drop("unknown_sender")
            return
        if self.peers is None and msg.round > self.last_heard.get(msg.src, -1):
            self.last_heard[msg.src] = msg.round
        if self.asynchronous and msg.round > 0 and msg.kind != "catchup":
            queue = self._queues[(msg.kind, msg.src)]
            if len(queue) >= self.max_queued:
                queue.popleft()
                counters.drop("queue_overflow")
            queue.append(msg)
        elif msg.round < self.current_round:
            counters.drop("stale_round")
        elif self.admits is not None and not self.admits(msg.src, msg.kind, msg.round):
            counters.drop("off_phase")
        elif msg.round > self.current_round + self.window and self.peers is not None:
            # before its configuration a node knows neither its round nor its window (a
            # server worker's is the run's rounds): kept, as many as max_unconfigured,
            # and dropped later where it is beyond them (a restarted worker dropped the
            # round's instruction that the coordinator sent it again)
            self._drop_ahead(msg.kind, msg.round, msg.src)
        else:
            slot = self._pending[(msg.kind, msg.round)]
            if msg.src in slot:
                counters.drop("duplicate")
            else:
                slot[msg.src] = msg
                if self.capped_beyond is not None and msg.round > self.capped_beyond:
                    self._cap_ahead(msg.kind, msg.src)

    def _cap_ahead(self, kind: str, src) -> None:
        """While catching up (the window unbounded, :meth:`~.Mailbox.answers`): keep the
        latest :data:`MAX_KEPT_AHEAD` of ``src``'s ``kind`` messages beyond the window,
        dropping its earlier ones as beyond it.  A hostile neighbour that answered a pull
        with a model for each of 900 later rounds held them all (1.1 GB at 300 k
        parameters)."""
        rounds = sorted(r for (k, r), slot in self._pending.items()
                        if k == kind and r > self.capped_beyond and src in slot)
        for r in rounds[:-MAX_KEPT_AHEAD]:
            del self._pending[(kind, r)][src]
            if not self._pending[(kind, r)]:
                del self._pending[(kind, r)]
            self._drop_ahead(kind, r, src)

    def _moved(self, meta: dict) -> None:
        """The launcher's news of a peer: restarted at a new address (told that we are
        away if we are), or gone for good (its process died and will not be restarted,
        or it finished: no round waits for it again)."""
        peer, address = meta.get("id"), meta.get("address")
        if type(peer) not in (int, str) or self.peers is None or peer not in self.peers:
            self.endpoint.counters.drop("bad_peer_update")
        elif meta.get("gone") is True:
            self.gone.add(peer)
            self.away.add(peer)
            self.done.add(peer)
        elif isinstance(address, str):
            # restarted: waited for again (a worker that is never asked would never speak)
            self.gone.discard(peer)
            self.away.discard(peer)
            self.done.discard(peer)
            self.rejoined_at[peer] = time.monotonic()
            self.endpoint.reconnect(peer, address)
            if self.offline:  # it did not hear our leave: as a restarted process, it
                # would take us for a silent peer and wait for us every round
                self.endpoint.send(peer, "leave", self.current_round)
        else:
            self.endpoint.counters.drop("bad_peer_update")

    def _presence(self, msg: Message) -> None:
        """What a peer's message says of it: gone (``leave``), or here, and at which round."""
        if msg.kind == "leave":
            self.away.add(msg.src)
            self.left_at[msg.src] = time.monotonic()
            if msg.meta.get("done") is True:
                self.done.add(msg.src)  # finished its rounds: gone for good
            return
        # a dead peer's last messages may still come in, and a peer that said it finished
        # is not waited for again whatever it sends (a hostile one that said so and went
        # on sending was waited for, then not, each round: a run 13 times as long)
        if msg.src not in self.gone and msg.src not in self.done:
            self.away.discard(msg.src)
        if msg.kind == "pull":
            self.pulling.add(msg.src)
        elif msg.kind in DATA_KINDS:
            self.pulling.discard(msg.src)
            if msg.round > self.last_heard.get(msg.src, -1):
                self.last_heard[msg.src] = msg.round
