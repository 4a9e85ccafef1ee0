"""The gossip node loop: train, encode, send, gather, mix, record.

One :class:`GossipNode` is the role of one gossip actor.  Learning lives in
:class:`~p2pfl.learner.Learner`, the update rule in a :mod:`gossip algorithm
<p2pfl.algorithms>`, and the bytes behind the :class:`~p2pfl.runtime.Runtime`
verbs; this loop only wires them.

With ``--schedule sync`` a round waits for the neighbours' messages of that
round (up to the time-out).  With ``--schedule async`` there is no barrier: a
node mixes whatever arrived since its last mix and goes on; ``--rounds`` then
counts its local iterations, and each record says how stale the models that
arrived since the last mix were (``staleness``: our iteration minus the sender's,
mean over those models; D-PSGD mixes only the latest of each sender).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .algorithms import make_algorithm
from .algorithms.attacks import corrupt
from .catchup import CatchUp
from .compression.temporal import TemporalGap
from .learner import Learner
from .runtime import Runtime
from .transport.availability import Availability

__all__ = ["GossipNode", "SUSPECT_AFTER"]

#: After this many consecutive misses a neighbour is not waited for until it is
#: heard from again (a message of any round, even a late one, counts).
SUSPECT_AFTER = 1


def _phase(phases: tuple, rnd: int) -> tuple:
    """Round ``rnd``'s ``(heard, w_ii, sent to)`` of a schedule's ``phases``."""
    return phases[(rnd - 1) % len(phases)]


class GossipNode(CatchUp):
    """A gossip learning node.

    Parameters
    ----------
    rt : Runtime
        The node's transport verbs.
    spec : NodeSpec
        Role ``gossip``: ``rule`` is the gossip algorithm, ``options`` its options.
    """

    #: A replacement process that found its neighbours finished (:meth:`run`): it holds
    #: its initial model.
    untrained = False

    def __init__(self, rt: Runtime, spec) -> None:
        self.rt, self.spec, self.run_spec = rt, spec, spec.runtime
        rt.mailbox.wait_for_pullers = False  # we answer a pull with our next round's send
        self.learner = Learner(spec.learn, spec.id, pause=rt.idle, run=rt.compute)
        self.neighbours = spec.peers
        # a time-varying topology: each phase's (heard, w_ii, sent to) (schedules.py)
        self.phases = spec.phases
        if self.phases:
            self.admit_phases(rt.mailbox)
        self.algorithm = make_algorithm(
            spec.rule, self.learner.num_params, spec.self_weight, spec.weights,
            x0=self.learner.get_flat(), options=spec.options,
            seed=spec.learn.seed * 7919 + spec.id, shapes=self.learner.shapes,
            peer_codecs=spec.runtime.codec_names)
        self.misses: Counter = Counter()  # total misses per neighbour
        self._streak: Counter = Counter()  # consecutive misses per neighbour
        self._since: dict = {}  # the first round of each neighbour's run of misses
        self.asynchronous = spec.runtime.schedule == "async"
        self.staleness: list = []  # this iteration's τ of each mixed model
        self.availability = Availability(spec.availability) if spec.availability.active \
            else None
        self.behaviour = spec.learn.behaviour
        self.byzantine = self.behaviour not in ("honest", "label_flip")
        self.rng = np.random.default_rng(spec.learn.seed * 31 + 17 + spec.id)
        # hand the live parameters to the rule, and adopt its result: no copies
        self.in_place = self.algorithm.pure_mix and not self.byzantine
        self.algorithm.observe_neighbours = self.behaviour == "alie"  # attacks.corrupt
        if self.behaviour == "label_flip":
            self.learner.flip_labels()

    def run(self, rejoin: bool = False, after: int = 0) -> int:
        """Run every round (or until stopped); return the last completed round.

        ``rejoin``: this process replaces one that died after recording round
        ``after``; it first catches up from a neighbour (model, CHOCO's public
        copy, round), or goes on from round ``after + 1`` if none answers, or ends
        at once (returning 0) when none is left to answer (:meth:`nothing_left`: it
        trained its initial model alone, and that model's accuracy was its final)."""
        done, rnd = 0, 0
        if self.asynchronous:
            self.rt.go_asynchronous()
        if rejoin:
            self.algorithm.restarted()
            back = self.rejoin(after + 1)
            if back is None:
                self.untrained = True  # its model is the initial one: no file of it
                if self.run_spec.presence:
                    self.leave(after, done=True)
                return 0
            rnd = max(after, back - 1)
            if rnd >= self.run_spec.rounds and self.run_spec.presence:
                self.leave(rnd, done=True)  # its restart made the neighbours wait again
        while rnd < self.run_spec.rounds:
            rnd += 1
            if self.rt.stopped:
                break
            outcome = "offline" if self.offline_now() else self.play(rnd)
            if outcome == "stopped":  # stopped mid-round: the round is not completed
                break
            if outcome == "offline":
                back = self.sit_out(rnd)
                if back is None:
                    break
                rnd = max(0, back - 1)  # next: the round we came back to
                continue
            done = rnd
        return done

    def offline_now(self) -> bool:
        """Whether an offline period (profile, trace or churn) holds now."""
        return self.availability is not None and self.availability.offline(self.rt.clock())

    def play(self, rnd: int) -> str:
        """Round ``rnd``: train, send, gather, mix, record.  Returns ``"done"``, or
        ``"stopped"``, or ``"offline"`` when an offline period began during the round:
        after training nothing is sent, and a wait ends where the period begins."""
        start = self.learner.get_flat() if self.byzantine else None
        loss = self.learner.train()
        if self.offline_now():
            return "offline"
        x = self.learner.params if self.in_place else self.learner.get_flat()
        sent = self.misbehave(x, start) if self.byzantine else x
        if self.phases:
            self.enter_phase(rnd)
        if sent is not None:  # None: silent, sends nothing
            for j in self.rt.requests("resync"):  # before outgoing: a temporal chain
                self.algorithm.on_resync_request(j)  # restarts with this round's packet
            self.broadcast(rnd, self.algorithm.outgoing(sent))
        if self.asynchronous:
            received = self.arrivals(rnd)
            self.algorithm.absent = frozenset(self.rt.away)  # after the arrivals' news
            x = self.algorithm.mix_async(x, received)
        else:
            received = self.collect(rnd)
            if self.offline_now():  # what came is not mixed: the node left before
                return "offline"
            x = self.algorithm.mix(x, received)
        self.drop_rejected(received)
        if self.rt.stopped:
            return "stopped"
        if not self.asynchronous:
            self.account(rnd, received)
        if self.in_place:
            self.learner.adopt(x)  # mix's result becomes the parameters
        else:
            self.learner.set_flat(x)
        for j in self.algorithm.resync_requests(rnd):
            self.rt.send(j, "resync", rnd)
        if rnd == self.run_spec.rounds and self.run_spec.presence:
            self.leave(rnd, done=True)  # neighbours that are behind stop waiting for us
        self.record(rnd, loss, len(received))
        return "done"

    def heard(self, rnd: int) -> list:
        """The neighbours whose messages round ``rnd`` mixes: all of them, or under a
        time-varying topology those its phase names (none in a phase it idles)."""
        if not self.phases:
            return self.neighbours
        return [j for j, _ in _phase(self.phases, rnd)[0]]

    def admit_phases(self, mailbox) -> None:
        """Under a schedule a neighbour's model comes only in the rounds of its phases:
        the mailbox drops others (``off_phase``; a hostile one could otherwise park a
        model in every round of the window, and a phase has no weight for a neighbour
        it does not hear).  Nodes that do not wait for a slow one run ahead of it by
        up to a period's rounds (on a static graph, by one), so the window of rounds
        kept ahead covers two periods, up to 256 rounds."""
        senders = [frozenset(j for j, _ in heard) for heard, _, _ in self.phases]
        period = len(senders)

        def admits(src, kind, rnd) -> bool:
            return kind != "model" or src in senders[(rnd - 1) % period]

        mailbox.restrict(admits, min(2 * period + 4, 256))

    def enter_phase(self, rnd: int) -> None:
        """Round ``rnd``'s row of the schedule's W_k: w_ii and the w_ij of the neighbours
        heard (w_ii = 1 in a phase the node idles; :mod:`~p2pfl.topology.schedules`)."""
        heard, own, _ = _phase(self.phases, rnd)
        self.algorithm.self_weight = own
        self.algorithm.weights = dict(heard)

    def misbehave(self, x, start):
        """A Byzantine node's published model (:mod:`~.algorithms.attacks`); it goes on
        from its honest one, so that each round's attack is of an honest update."""
        return corrupt(x, start, self.behaviour, self.rng, self.algorithm.neighbour_models())

    def broadcast(self, rnd: int, packet) -> None:
        """Send this round's packet (under a time-varying topology to the neighbours its
        phase names); a neighbour that asked for our full state (noted before the
        packet was made) gets that."""
        for j, their_round in self.rt.requests("pull").items():  # a neighbour is back
            self.rt.send(j, "catchup", their_round,
                         self.algorithm.catchup(self.learner.get_flat(), j), at=rnd)
        special = self.algorithm.full_copies()
        away = self.rt.away
        online = [j for j in self.neighbours if self._streak[j] < SUSPECT_AFTER
                  and j not in away]
        chosen = (set(_phase(self.phases, rnd)[2]) if self.phases
                  else set(self.algorithm.targets(online))) | set(special)
        plain = []  # those that get this round's packet: packed once for all
        for j in self.neighbours:
            if j in chosen and j not in away:
                if j in special:
                    self.rt.send(j, "model", rnd, special[j])
                else:
                    plain.append(j)
        if plain:
            self.rt.send_many(plain, "model", rnd, packet)

    def expected(self, rnd: int) -> list:
        """Neighbours to wait for this round (of those it mixes, :meth:`heard`).

        Not those that missed SUSPECT_AFTER rounds in a row and have not been heard
        from since the first of them (a silent neighbour costs its time-out once, and
        a message of that round or later, even a late one, brings it back: a neighbour
        that fell behind is waited for while it catches up, or it would never rejoin
        the others' rounds), nor those that said they left and sent nothing since, nor
        those already past this round (their messages come in order, so a round-``rnd``
        one that is not here is not coming: we are the late one, and catch up without
        waiting).
        """
        away = self.rt.away
        return [j for j in self.heard(rnd)
                if (self._streak[j] < SUSPECT_AFTER or self.rt.heard_from(j, self._since[j]))
                and j not in away and not self.rt.heard_from(j, rnd + 1)]

    def collect(self, rnd: int) -> dict:
        """Neighbours' decoded payloads for ``rnd``; a silent neighbour costs its time-out once."""
        timeout = self.run_spec.round_timeout
        if self.availability is not None:  # the wait ends where an offline period begins
            now = self.rt.clock()
            timeout = max(0.0, min(timeout, self.availability.next_offline(now) - now))
        packets = self.rt.gather("model", rnd, self.expected(rnd), timeout)
        received = {}
        for j, packet in packets.items():
            try:
                received[j] = self.algorithm.decode(packet)
            except TemporalGap:  # lost the sender's last message: resync, then plain
                self.rt.drop("temporal_gap")
            except ValueError:  # CodecError is a ValueError
                self.rt.drop("undecodable")
        return received

    def drop_rejected(self, received: dict) -> None:
        """Drop and count what the rule's mix found unusable (non-finite models).  In
        synchronous rounds it is then as if it had not arrived: a miss of its sender
        (:meth:`account`).  Without a barrier only the drop is counted."""
        for j in self.algorithm.take_rejected():
            self.rt.drop("undecodable")
            if not self.asynchronous:
                received.pop(j, None)

    def account(self, rnd: int, received: dict) -> None:
        """A round's misses: each neighbour it mixes (:meth:`heard`) that is not in
        ``received`` and did not say it left."""
        away = self.rt.away
        for j in self.heard(rnd):
            if j in received:
                self._streak[j] = 0
            elif j not in away:  # a neighbour that said it left is not missed
                self.misses[j] += 1
                if not self._streak[j]:
                    self._since[j] = rnd
                self._streak[j] += 1

    def sit_out(self, rnd: int) -> int | None:
        """Offline at round ``rnd``: say so, hear and send nothing until online again,
        then catch up.  Returns the round to continue with, or None once nothing is
        left to learn from (:meth:`nothing_left`; a trace may keep the node offline long
        after the run)."""
        self.leave(rnd)
        self.rt.report(rnd, {"offline": True, "loss": None, "test_loss": None,
                             "accuracy": None})
        if self.rt.offline(self.availability, self.nothing_left):
            return None
        self.algorithm.came_back()  # what it holds of its neighbours is out of date
        return rnd if self.rt.stopped else self.rejoin(rnd)

    def nothing_left(self) -> bool:
        """Whether every neighbour finished its rounds.  (Neighbours offline too may come
        back to learn with, and do by their availability: ending here when some had
        finished and the rest were offline ended nodes of an asynchronous run offline
        for 2 s with 60 rounds left; the launcher waits for them instead, and says so.)"""
        return set(self.neighbours) <= self.rt.done

    def leave(self, rnd: int, done: bool = False) -> None:
        self.rt.send_many(self.neighbours, "leave", rnd, **({"done": True} if done else {}))

    def _silent(self, j) -> bool:
        """Whether neighbour ``j`` missed SUSPECT_AFTER rounds in a row and sent nothing
        since the first of them."""
        return self._streak[j] >= SUSPECT_AFTER and not self.rt.heard_from(j, self._since[j])

    def arrivals(self, rnd: int) -> dict:
        """Without a barrier: every neighbour's decoded packets since the last mix."""
        received, self.staleness = {}, []
        for j, packets in self.rt.drain("model").items():
            for packet in packets:
                try:
                    received.setdefault(j, []).append(self.algorithm.decode(packet))
                    self.staleness.append(max(0, rnd - packet.round))
                except TemporalGap:
                    self.rt.drop("temporal_gap")
                except ValueError:  # CodecError is a ValueError
                    self.rt.drop("undecodable")
        return received

    def record(self, rnd: int, loss: float, arrived: int) -> None:
        """This round's record; with the consensus distance on, the model goes along."""
        evaluate = self.run_spec.evaluates(rnd)
        test_loss, acc = self.learner.evaluate() if evaluate else (None, None)
        vector = None
        if evaluate and self.run_spec.consensus:
            vector = self.learner.get_flat().numpy()
        fields = {"loss": float(loss) if loss == loss else None,  # nan: no training
                  "test_loss": test_loss, "accuracy": acc,
                  "neighbours_heard": arrived, "misses": sum(self.misses.values())}
        if self.asynchronous:
            fields["staleness"] = (sum(self.staleness) / len(self.staleness)
                                   if self.staleness else None)
        self.rt.report(rnd, fields, vector)

    def final_state(self) -> dict:
        """The model's state as the node ends (``--save-models``)."""
        return self.learner.model.state_dict()

    def final_report(self) -> dict:
        """Totals for the ``bye`` message: exact counters of the whole run."""
        c = self.rt.endpoint.counters
        return self.rt.final_counters(
            model_messages=c.messages[("sent", "model")],
            misses=[[j, n] for j, n in self.misses.items()],
            num_samples=self.learner.num_samples, num_params=self.learner.num_params,
            device=str(self.learner.device))
