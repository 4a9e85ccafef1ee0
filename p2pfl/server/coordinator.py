"""The coordinator: the one shared round loop of every server-mode strategy.

select → configure → send "control" → collect replies → decode → aggregate →
evaluate → record; then every worker gets a final "control" with its final
model.  The strategy supplies every decision; this loop only moves packets.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import torch

from ..learner import build_run_model, test_set
from ..models import assign_params, flatten_params
from ..node import LAUNCHER
from ..strategies import Reply, ServerContext, make_strategy
from ..training import evaluate as evaluate_model
from ..transport import Endpoint, Mailbox

__all__ = ["Coordinator", "send_packet"]


def send_packet(ep: Endpoint, peer, kind: str, rnd: int, packet, extra_meta=None) -> int:
    meta = dict(packet.meta or {}, **(extra_meta or {}))
    return ep.send(peer, kind, rnd, frames=packet.frames, codec=packet.codec,
                   shapes=packet.shapes, dtypes=packet.dtypes, meta=meta)


class _Evaluator:
    """Evaluates flat parameter vectors on the test set (per label group)."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.model = build_run_model(settings)
        self._sets: dict = {}

    def init(self) -> torch.Tensor:
        return flatten_params(self.model)

    def __call__(self, flat: torch.Tensor, group: int = 0) -> tuple[float, float]:
        if group not in self._sets:
            x, y = test_set(self.settings, group)
            self._sets[group] = (torch.from_numpy(np.ascontiguousarray(x)),
                                 torch.from_numpy(np.ascontiguousarray(y)))
        assign_params(self.model, flat)
        return evaluate_model(self.model, *self._sets[group])


class Coordinator:
    """The server role: owns the strategy and talks to every worker."""

    def __init__(self, endpoint: Endpoint, mailbox: Mailbox, spec: dict) -> None:
        torch.set_num_threads(1)
        self.endpoint, self.mailbox = endpoint, mailbox
        self.id, self.label = spec["id"], spec["label"]
        self.settings = s = spec["settings"]
        self.workers = [int(j) for j, _, _ in spec["neighbours"]]
        evaluator = _Evaluator(s)
        ctx = ServerContext(
            settings=s, workers=list(self.workers),
            labels={int(k): v for k, v in s.get("worker_labels", {}).items()},
            init=evaluator.init(), evaluate=evaluator,
            groups={int(k): int(v) for k, v in s.get("worker_groups", {}).items()},
            extra={"samples": {int(k): int(v) for k, v in s.get("worker_samples", {}).items()}})
        self.strategy = make_strategy(s["mode"], ctx)
        self.rng = np.random.default_rng(s["seed"] + 65537)
        self.num_params = int(ctx.init.numel())
        self.misses: Counter = Counter()
        self.errors: Counter = Counter()
        self.last_round = 0
        self.t_start = time.monotonic()

    def run(self) -> int:
        """Run the rounds, then hand every worker its final model."""
        rnd = 0
        while rnd < self.strategy.rounds and not self.mailbox.stopped:
            rnd += 1
            participants = self.strategy.select(rnd, self.workers, self.rng)
            for w, packet in self.strategy.configure(rnd, participants).items():
                send_packet(self.endpoint, w, "control", rnd, packet)
            replies = self.collect(rnd, participants)
            self.strategy.aggregate(rnd, replies)
            self.record(rnd, replies, self.strategy.evaluate(rnd))
            self.last_round = rnd
            if self.strategy.done(rnd):
                break
        for w in self.workers:
            send_packet(self.endpoint, w, "control", rnd + 1, self.strategy.finalize(w),
                        {"final": True})
        return rnd

    def collect(self, rnd: int, participants: list) -> list:
        """Replies of this round's participants: content, or an error saying why not."""
        kind = self.strategy.reply_kind
        msgs = self.mailbox.collect(kind, rnd, participants, self.settings["round_timeout"])
        replies = []
        for w in participants:
            msg = msgs.get(w)
            if msg is None:
                self.misses[w] += 1
                replies.append(Reply(w, error={"code": "timeout", "reason": f"no {kind}"}))
                continue
            packet = _packet(msg)
            try:
                content = self.strategy.decode(w, packet)
            except ValueError as exc:  # CodecError is a ValueError
                self.endpoint.counters.drop("undecodable")
                replies.append(Reply(w, error={"code": "undecodable", "reason": str(exc)[:200]}))
                continue
            if isinstance(content, torch.Tensor) and not bool(torch.isfinite(content).all()):
                replies.append(Reply(w, error={"code": "nonfinite", "reason": "NaN or inf"}))
                continue
            replies.append(Reply(w, content=content, num_samples=int(msg.meta.get("n", 1)),
                                 meta=dict(msg.meta)))
        for r in replies:
            if not r.ok:
                self.errors[r.error["code"]] += 1
        return replies

    def record(self, rnd: int, replies: list, fields: dict) -> None:
        c, peers = self.endpoint.counters, self.workers
        rec = {
            "round": rnd, "node": self.id, "label": self.label, "role": "coordinator",
            "participants": len(replies), "replies_ok": sum(r.ok for r in replies),
            "failed": [[r.worker, r.error["code"]] for r in replies if not r.ok],
            "bytes_sent": c.total("sent", peers=peers, round=rnd),
            "bytes_received": c.total("received", peers=peers, round=rnd),
            "wall_s": round(time.monotonic() - self.t_start, 4),
            "dropped": sum(c.dropped.values()),
        }
        rec.update(fields)
        self.endpoint.send(LAUNCHER, "metrics", rnd, meta=rec)

    def final_report(self) -> dict:
        c, peers = self.endpoint.counters, self.workers
        handshake = c.total("sent", peers=peers, round=0)
        return {
            "node": self.id, "role": "coordinator",
            "bytes_sent": c.total("sent", peers=peers) - handshake,
            "bytes_received": c.total("received", peers=peers) - c.total("received", peers=peers,
                                                                         round=0),
            "handshake_bytes": handshake,
            "misses": [[j, n] for j, n in self.misses.items()],
            "errors": dict(self.errors),
            "dropped": dict(c.dropped),
            "num_samples": 0, "num_params": self.num_params,
            "rounds_done": self.last_round,
            "strategy": self.strategy.summary(),
        }


def _packet(msg):
    from ..algorithms.base import Packet

    return Packet(msg.codec, list(msg.frames), list(msg.shapes), list(msg.dtypes),
                  dict(msg.meta))
