"""The worker role in server modes: wait for the coordinator, apply, train, reply, record.

A worker that is not selected in a round hears nothing for that round, so it
waits for the *next* "control" message, whatever its round
(:func:`next_control`).  The last one carries ``meta["final"]``: the worker
takes its final model, reports a last record and returns.
"""

from __future__ import annotations

import time

from ..learner import Learner
from ..node import LAUNCHER
from ..strategies import make_client
from ..transport import Endpoint, Mailbox
from .coordinator import _packet, send_packet

__all__ = ["Worker", "next_control"]


def next_control(mailbox: Mailbox, coord, after: int, timeout: float):
    """The coordinator's next "control" message for a round > ``after``, or None."""
    return mailbox.next_after("control", after, coord, timeout)


class Worker:
    """A server-mode worker: the node program's learner driven by a client strategy."""

    def __init__(self, endpoint: Endpoint, mailbox: Mailbox, spec: dict) -> None:
        self.endpoint, self.mailbox = endpoint, mailbox
        self.id, self.label = spec["id"], spec["label"]
        self.settings = s = spec["settings"]
        self.coord = int(spec["neighbours"][0][0])
        self.learner = Learner(s, self.id)
        self.client = make_client(s["mode"], self.learner, s)
        # a worker may sit out many rounds: keep every future round's message
        mailbox.window = int(s["rounds"]) + 2
        self.rounds_done = 0
        self.t_start = time.monotonic()

    def run(self) -> int:
        """Serve rounds until the final instruction (or a stop); return rounds served."""
        s, rnd = self.settings, 0
        wait = s["start_timeout"] + (s["rounds"] + 1) * (s["round_timeout"] + 30.0)
        while True:
            msg = next_control(self.mailbox, self.coord, rnd, wait)
            if msg is None:
                return self.rounds_done
            rnd, packet = msg.round, _packet(msg)
            if msg.meta.get("final"):
                self.client.finish(packet)
                self.record(rnd, None, final=True)
                return self.rounds_done
            self.client.apply(rnd, packet)
            acc = self._evaluate(rnd)
            loss = self.client.fit()
            send_packet(self.endpoint, self.coord, self.client.reply_kind, rnd,
                        self.client.reply(rnd))
            self.rounds_done += 1
            self.record(rnd, loss, acc=acc)

    def _evaluate(self, rnd: int):
        every = self.settings["eval_every"]
        if rnd % every == 0 or rnd == self.settings["rounds"]:
            return self.learner.evaluate()
        return None

    def record(self, rnd: int, loss, *, acc=None, final: bool = False) -> None:
        """This round's record; ``accuracy`` is that of the model the worker holds."""
        test_loss, accuracy = self.learner.evaluate() if final else (acc or (None, None))
        c = self.endpoint.counters
        rec = {
            "round": rnd, "node": self.id, "label": self.label, "role": "worker",
            "behaviour": self.client.behaviour, "loss": loss, "test_loss": test_loss,
            "accuracy": accuracy, "final": final,
            "bytes_sent": c.total("sent", peers=[self.coord], round=rnd),
            "bytes_received": c.total("received", peers=[self.coord], round=rnd),
            "wall_s": round(time.monotonic() - self.t_start, 4),
            "dropped": sum(c.dropped.values()),
        }
        self.endpoint.send(LAUNCHER, "metrics", rnd, meta=rec)

    def final_report(self) -> dict:
        c, peers = self.endpoint.counters, [self.coord]
        handshake = c.total("sent", peers=peers, round=0)
        return {
            "node": self.id, "role": "worker", "behaviour": self.client.behaviour,
            "bytes_sent": c.total("sent", peers=peers) - handshake,
            "bytes_received": c.total("received", peers=peers) - c.total("received", peers=peers,
                                                                         round=0),
            "handshake_bytes": handshake,
            "misses": [], "dropped": dict(c.dropped),
            "num_samples": self.learner.num_samples,
            "num_params": self.learner.num_params,
            "rounds_served": self.rounds_done,
        }
