"""The worker role in server modes: wait for the coordinator, apply, train, reply, record.

A worker that is not selected in a round hears nothing for that round, so it
waits for the coordinator's *next* "control" message, whatever its round.  The
last one carries ``meta["final"]`` and the round after the last one played:
the worker takes its final model and reports it as part of that last round
(its record of that round, if it took part, is held back and completed).

A worker that fell behind (paused, or on a slow link) finds several instructions
queued.  It serves the newest, the coordinator's current round; the older ones
are applied in order, which keeps each strategy's downlink state as it was (STC's
global model and temporal acknowledgements, FD's delta references; FD distils from
each aggregate it applies), but not trained for or answered.  Their replies would
reach a coordinator that has moved on and drops them, and an update dropped there
loses the residual its error feedback carried.
"""

from __future__ import annotations

from ..learner import Learner
from ..runtime import Runtime
from ..strategies import make_client
from ..transport.availability import Availability

__all__ = ["Worker"]


class Worker:
    """A server-mode worker: the node program's learner driven by a client strategy."""

    def __init__(self, rt: Runtime, spec) -> None:
        self.rt, self.run_spec = rt, spec.runtime
        self.coord = spec.peers[0]
        self.learner = Learner(spec.learn, spec.id, pause=rt.idle, run=rt.compute)
        self.client = make_client(spec.rule, self.learner, spec.options, spec.learn)
        # a worker may sit out many rounds: keep every future round's message
        rt.mailbox.window = self.run_spec.rounds + 2
        self.rounds_done = 0
        self.rounds_last = 0  # the latest round served
        self.skipped = 0  # instructions applied, not answered: newer ones were queued
        self.availability = Availability(spec.availability) if spec.availability.active \
            else None
        self._held = None  # the last round's record, completed by the final model
        self._reply = None  # (round, packet) of the last reply, sent again if repeated

    def run(self, rejoin: bool = False, after: int = 0) -> int:
        """Serve rounds until the final instruction (or a stop); return rounds served."""
        r, rnd = self.run_spec, 0
        deadline = self.rt.clock() + r.start_timeout + (r.rounds + 1) * (r.round_timeout + 30.0)
        while True:
            if self.offline_now() and not self.sit_out(rnd):
                self._flush()  # stopped while offline: it ends so
                return self.rounds_done
            until = self.availability.next_offline(self.rt.clock()) if self.availability \
                else float("inf")
            wait = min(deadline, until) - self.rt.clock()
            # after rnd - 1: a coordinator restarted from its checkpoint repeats the round
            # it was in when it died, and that round is to be served again
            packet = self.rt.next_after("control", rnd - 1, self.coord, max(0.0, wait))
            if packet is None and not self.rt.stopped and self.rt.clock() < deadline:
                continue  # an offline period begins
            if packet is None:
                self._flush()
                return self.rounds_done
            if packet.round > self.rounds_last:  # not a restarted coordinator's repeat
                packet = self._newest(packet)
            rnd = packet.round
            if packet.meta.get("final"):
                try:
                    self.client.finish(packet)
                except ValueError:  # unusable: the final record is of the model we hold
                    self.rt.drop("undecodable")
                self.record_final(rnd - 1)
                return self.rounds_done
            again = rnd <= self.rounds_last
            self._flush()
            if again and self._reply is not None and self._reply[0] == rnd:
                # A coordinator restarted from its checkpoint repeats the round we served:
                # the same reply again, not a second one trained and encoded.  A second
                # encode would count the first one's unsent part in the residual twice,
                # and the second labels would not be those the server may already hold.
                self.rt.send(self.coord, self.client.reply_kind, rnd, self._reply[1])
                self.rounds_done += 1
                continue
            try:
                self.client.apply(rnd, packet)
            except ValueError:  # CodecError is a ValueError: an instruction we cannot use
                self.rt.drop("undecodable")  # no reply: the round is a time-out there
                continue
            acc = self.learner.evaluate() if self.run_spec.evaluates(rnd) else (None, None)
            loss = self.client.fit()
            if self.offline_now():  # went offline while training: no reply
                if not self.sit_out(rnd):
                    self._flush()
                    return self.rounds_done
                continue
            if self.client.behaviour != "silent":  # a silent worker never replies
                self._reply = (rnd, self.client.reply(rnd))
                self.rt.send(self.coord, self.client.reply_kind, rnd, self._reply[1])
            self.rounds_done += 1
            if again:  # its record is written already
                continue
            self.rounds_last = rnd
            self._held = (rnd, {"loss": loss, "test_loss": acc[0], "accuracy": acc[1]})
            if rnd < self.run_spec.rounds:
                self._flush()  # only the last round waits for the final model

    def _newest(self, packet):
        """The newest instruction queued from ``packet`` on (the final one, if queued);
        those before it are applied, in order, but not trained for or answered (module
        docstring)."""
        while not packet.meta.get("final"):
            later = self.rt.next_after("control", packet.round, self.coord, 0.0)
            if later is None:
                return packet
            try:
                self.client.apply(packet.round, packet)
            except ValueError:  # unusable: the next one may catch up (STC), or not
                self.rt.drop("undecodable")
            self.skipped += 1
            packet = later
        return packet

    def offline_now(self) -> bool:
        """Whether an offline period holds now (a stopped worker sits out nothing)."""
        return (self.availability is not None and not self.rt.stopped
                and self.availability.offline(self.rt.clock()))

    def sit_out(self, rnd: int) -> bool:
        """Offline: say so, hear nothing until online again, then say we are back;
        False if stopped while offline (the run ended): the worker then ends offline,
        taking nothing more, not even a final model still on its way to it.

        The coordinator leaves an absent worker out of its rounds; the instructions
        it sent before it knew are lost, as they would be on a real network.  Its
        ``offline`` record carries the latest round it heard of (1 before any)."""
        self._flush()
        self.rt.send(self.coord, "leave", rnd)
        gone = {"offline": True, "loss": None, "test_loss": None, "accuracy": None}
        self.rt.report(max(rnd, 1), self._fields(gone, False))
        self.rt.offline(self.availability)
        if self.rt.stopped:
            return False
        self.rt.send(self.coord, "pull", rnd)
        return True

    def _fields(self, fields: dict, final: bool) -> dict:
        return dict(fields, behaviour=self.client.behaviour, final=final)

    def _flush(self) -> None:
        if self._held is not None:
            rnd, fields = self._held
            self.rt.report(rnd, self._fields(fields, False))
            self._held = None

    def record_final(self, last: int) -> None:
        """The record of round ``last``, the final one: accuracy of the final model."""
        test_loss, accuracy = self.learner.evaluate()
        fields = {"loss": None}
        if self._held is not None and self._held[0] == last:
            fields = self._held[1]
            self._held = None
        self._flush()
        fields = dict(fields, test_loss=test_loss, accuracy=accuracy)
        self.rt.report(last, self._fields(fields, True))

    def final_state(self) -> dict:
        """The model this worker ends with (``--save-models``): the final global model
        in fedavg and stc, its cluster's in cfl, its own in fd and cfd."""
        return self.learner.model.state_dict()

    def final_report(self) -> dict:
        c = self.rt.endpoint.counters  # model updates sent (soft labels are not models)
        return self.rt.final_counters(
            model_messages=c.messages[("sent", "update")],
            behaviour=self.client.behaviour, misses=[],
            num_samples=self.learner.num_samples, num_params=self.learner.num_params,
            rounds_served=self.rounds_done, instructions_skipped=self.skipped,
            device=str(self.learner.device))
