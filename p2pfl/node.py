"""The gossip node loop: train, encode, send, collect, mix, record.

One :class:`GossipNode` is one actor.  It owns its endpoint (all its sockets)
and runs in one thread.  Learning lives in :class:`~p2pfl.learner.Learner`,
the update rule in a :mod:`gossip algorithm <p2pfl.algorithms>`, and the
bytes in the :mod:`transport <p2pfl.transport>`; this loop only wires them.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from .algorithms import Packet, make_algorithm
from .learner import Learner
from .transport import Endpoint, Mailbox

__all__ = ["GossipNode", "LAUNCHER", "SUSPECT_AFTER"]

LAUNCHER = "launcher"
#: After this many consecutive misses a neighbour is no longer waited for
#: (its messages are still taken when they come).
SUSPECT_AFTER = 2


class GossipNode:
    """A gossip learning node.

    Parameters
    ----------
    endpoint, mailbox
        The node's transport, owned by the calling thread.
    spec : dict
        ``id``, ``label``, ``neighbours`` (list of ``[id, address, weight]``),
        ``self_weight`` and ``settings`` (the node's resolved options).
    """

    def __init__(self, endpoint: Endpoint, mailbox: Mailbox, spec: dict) -> None:
        self.endpoint, self.mailbox = endpoint, mailbox
        self.id, self.label = spec["id"], spec["label"]
        self.settings = s = spec["settings"]
        self.learner = Learner(s, self.id)
        self.neighbours = [int(j) for j, _, _ in spec["neighbours"]]
        weights = {int(j): float(w) for j, _, w in spec["neighbours"]}
        self.algorithm = make_algorithm(
            s["algorithm_resolved"], self.learner.num_params, spec["self_weight"], weights,
            x0=self.learner.get_flat(), settings=dict(s, codec_seed=s["seed"] * 7919 + self.id))
        self.misses: Counter = Counter()  # total misses per neighbour
        self._streak: Counter = Counter()  # consecutive misses per neighbour
        self.t_start = time.monotonic()

    def run(self) -> int:
        """Run every round (or until stopped); return the last completed round."""
        done = 0
        for rnd in range(1, self.settings["rounds"] + 1):
            if self.mailbox.stopped:
                break
            loss = self.learner.train()
            x = self.learner.get_flat()
            self.broadcast(rnd, self.algorithm.outgoing(x))
            received = self.collect(rnd)
            if self.mailbox.stopped:  # stopped mid-round: the round is not completed
                break
            self.learner.set_flat(self.algorithm.mix(x, received))
            self.resync(rnd)
            self.record(rnd, loss, len(received))
            done = rnd
        return done

    def broadcast(self, rnd: int, packet: Packet) -> None:
        """Send this round's packet; a neighbour that asked for our full state gets that."""
        for j in self.mailbox.take_requests("resync"):
            self.algorithm.on_resync_request(j)
        special = self.algorithm.full_copies()
        for j in self.neighbours:
            p = special.get(j, packet)
            self.endpoint.send(j, "model", rnd, frames=p.frames, codec=p.codec,
                               shapes=p.shapes, dtypes=p.dtypes, meta=p.meta)

    def resync(self, rnd: int) -> None:
        """Ask neighbours whose public copy we lost track of for their full state."""
        for j in self.algorithm.resync_requests(rnd):
            self.endpoint.send(j, "resync", rnd)

    def collect(self, rnd: int) -> dict:
        """Neighbours' decoded payloads for ``rnd``; misses are recorded, never waited out twice."""
        expected = [j for j in self.neighbours if self._streak[j] < SUSPECT_AFTER]
        msgs = self.mailbox.collect("model", rnd, expected, self.settings["round_timeout"])
        if self.mailbox.stopped:
            return {}
        received = {}
        for j, msg in msgs.items():
            try:
                received[j] = self.algorithm.decode(
                    Packet(msg.codec, msg.frames, msg.shapes, msg.dtypes, msg.meta, msg.round))
            except ValueError:  # CodecError is a ValueError
                self.endpoint.counters.drop("undecodable")
        for j in self.neighbours:
            if j in received:
                self._streak[j] = 0
            else:
                self.misses[j] += 1
                self._streak[j] += 1
        return received

    def record(self, rnd: int, loss: float, arrived: int) -> None:
        """Send this round's record (and, for the consensus distance, the model) to the launcher."""
        every = self.settings["eval_every"]
        evaluate = rnd % every == 0 or rnd == self.settings["rounds"]
        test_loss, acc = self.learner.evaluate() if evaluate else (None, None)
        c = self.endpoint.counters
        rec = {
            "round": rnd, "node": self.id, "label": self.label, "loss": float(loss),
            "test_loss": test_loss, "accuracy": acc,
            "bytes_sent": c.total("sent", peers=self.neighbours, round=rnd),
            "bytes_received": c.total("received", peers=self.neighbours, round=rnd),
            "wall_s": round(time.monotonic() - self.t_start, 4),
            "neighbours_heard": arrived, "misses": sum(self.misses.values()),
            "dropped": sum(c.dropped.values()),
        }
        frames = []
        if evaluate and self.settings.get("consensus", True):
            frames = [self.learner.get_flat().numpy().astype(np.float32)]
        self.endpoint.send(LAUNCHER, "metrics", rnd, meta=rec, frames=frames,
                           shapes=[[f.size] for f in frames], dtypes=["float32"] * len(frames))

    def final_report(self) -> dict:
        """Totals for the ``bye`` message: exact counters of the whole run."""
        c, peers = self.endpoint.counters, self.neighbours
        handshake = c.total("sent", peers=peers, round=0)
        return {
            "node": self.id,
            "bytes_sent": c.total("sent", peers=peers) - handshake,
            "bytes_received": c.total("received", peers=peers) - c.total("received", peers=peers,
                                                                         round=0),
            "handshake_bytes": handshake,
            "model_messages": c.messages[("sent", "model")],
            "sent_per_peer": [[j, n] for j, n in c.per_peer("sent").items() if j != LAUNCHER],
            "received_per_peer": [[j, n] for j, n in c.per_peer("received").items()
                                  if j != LAUNCHER],
            "misses": [[j, n] for j, n in self.misses.items()],
            "dropped": dict(c.dropped),
            "num_samples": self.learner.num_samples,
            "num_params": self.learner.num_params,
        }
