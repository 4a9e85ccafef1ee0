"""The coordinator: the one shared round loop of every server-mode strategy.

select → configure → send "control" → gather replies → decode → aggregate →
evaluate → record → checkpoint.  After the last round every worker gets a final "control"
with its final model, before that round's record is made, so the record
counts those bytes too.  The strategy supplies every decision; this loop only
moves packets.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch

from ..algorithms.base import MAX_MAGNITUDE, within_range
from ..compression.temporal import TemporalGap
from ..learner import build_run_model, test_set
from ..models import assign_params, flatten_params
from ..runtime import CLOSER_GRACE_S, Runtime
from ..strategies import Reply, ServerContext, make_strategy
from ..training import evaluate as evaluate_model
from . import checkpoint

__all__ = ["Coordinator", "declared_size", "MAX_SAMPLES"]

#: A worker that left this many of its rounds in a row unanswered is not waited for
#: until it is heard from again (gossip's neighbours give up after one: a server
#: round is costlier to lose, and one late reply should not cost the next).
SUSPECT_AFTER = 2


#: The largest data size a worker may declare: its weight in a data-size weighted mean.
MAX_SAMPLES = 1 << 40


def declared_size(meta: dict) -> int:
    """The data size a reply declares (1 when it declares none): an integer in [1,
    MAX_SAMPLES], or ValueError (``bad_size``).  The size is the worker's word:
    ``mean`` and ``normclip`` weight by it, the other aggregators do not."""
    n = meta.get("n", 1)
    if type(n) is not int or not 1 <= n <= MAX_SAMPLES:  # msgpack's bool is not an int
        shown = n if type(n) is int else type(n).__name__  # no repr of a nested value
        err = ValueError(f"declared data size {shown} is not an integer in [1, 2**40]")
        err.code = "bad_size"
        raise err
    return n


class _Evaluator:
    """Evaluates flat parameter vectors on the test set (per label group)."""

    def __init__(self, learn) -> None:
        self.learn = learn
        self.model = build_run_model(learn)
        self._sets: dict = {}

    def init(self) -> torch.Tensor:
        return flatten_params(self.model)

    def __call__(self, flat: torch.Tensor, group: int = 0) -> tuple[float, float]:
        if group not in self._sets:
            x, y = test_set(self.learn, group)
            self._sets[group] = (torch.from_numpy(np.ascontiguousarray(x)),
                                 torch.from_numpy(np.ascontiguousarray(y)))
        assign_params(self.model, flat)
        return evaluate_model(self.model, *self._sets[group])


class Coordinator:
    """The server role: owns the strategy and talks to every worker."""

    def __init__(self, rt: Runtime, spec) -> None:
        torch.set_num_threads(1)
        self.rt, self.run_spec = rt, spec.runtime
        self.workers = spec.peers
        evaluator = _Evaluator(spec.learn)
        ctx = ServerContext(
            options=spec.options, learn=spec.learn, runtime=spec.runtime,
            workers=list(self.workers), labels=dict(zip(self.workers, spec.server.labels)),
            init=evaluator.init(), evaluate=evaluator,
            groups={w: int(g) for w, g in zip(self.workers, spec.server.groups)},
            byzantine=frozenset(int(w) for w in spec.server.byzantine),
            shapes=tuple(tuple(p.shape) for p in evaluator.model.parameters()))
        self.strategy = make_strategy(spec.rule, ctx)
        self.rng = np.random.default_rng(spec.learn.seed + 65537)
        self.num_params = int(ctx.init.numel())
        self.misses: Counter = Counter()
        self.errors: Counter = Counter()
        self._silent: dict = {}  # worker -> (rounds unanswered in a row, the first of them)
        self._instructions: dict = {}  # this round's packets, a worker's
        self._instructed_at = 0.0  # and when they left (run time)
        self.last_round = 0
        self.checkpoint = spec.server.checkpoint
        self.target = spec.server.target_accuracy

    def run(self, rejoin: bool = False, after: int = 0) -> int:
        """Run the rounds; after the last, hand every worker its final model.

        ``rejoin``: this process replaces one that died after recording round
        ``after``.  It resumes after its last checkpoint; a round recorded but
        not checkpointed (the process died in between) is run again without a
        second record.  Records are sent before each checkpoint is written, except
        the last round's: its checkpoint holds the record and is written before the
        final models leave, so a coordinator that died while handing them out hands
        out the same ones again, instead of running the last round a second time
        without the workers that already have theirs and left.
        """
        rnd, finished, held = 0, False, None
        if rejoin and self.checkpoint and os.path.exists(self.checkpoint):
            rnd, held = self.resume()
            finished = held is not None  # died handing out the final models: again
        resumed_final = finished
        recorded = after if rejoin else 0
        while not finished:
            rnd += 1
            participants = self.strategy.select(rnd, self.available(), self.rng)
            self.instruct(rnd, self.strategy.configure(rnd, participants))
            replies = self.collect(rnd, participants)
            if replies is None:  # a stop (Ctrl-C, SIGTERM) cut the gather short: the
                self.last_round = rnd - 1  # round was not played, and is not recorded
                return rnd - 1  # (the workers are stopped too: no final models)
            self.account(rnd, replies)
            self.strategy.aggregate(rnd, replies)
            fields = self.strategy.evaluate(rnd)
            finished = (self.strategy.done(rnd) or rnd >= self.strategy.rounds
                        or self.rt.stopped or self.rt.finish_requested
                        or self.reached(fields)
                        or set(self.workers) <= self.rt.done)  # every worker died
            held = self.record_of(replies, fields)
            self.last_round = rnd
            if finished:
                break
            if rnd > recorded:
                self.rt.report(rnd, held)
            if self.checkpoint:
                # The round's record leaves before its checkpoint is written: a restart
                # resumes after the checkpoint, so a record still held would be lost.
                self.rt.flush()
                self.save()
        if self.checkpoint and not resumed_final:
            self.save(final_record=held)
        for w in self.workers:
            if w not in self.rt.done:  # dead, and not restarted: nobody to hand it to
                self.rt.send(w, "control", rnd + 1, self.strategy.finalize(w), final=True)
        if rnd > recorded:  # after the final models: the record counts their bytes, once
            self.rt.drain_uplink(self.run_spec.round_timeout + CLOSER_GRACE_S)  # they left
            self.rt.report(rnd, held)
        return rnd

    def save(self, final_record: dict | None = None) -> None:
        """Checkpoint after a completed round: the strategy's state (global models,
        residuals, STC cache, CFL clusters, FD aggregates), the sampler's RNG and the
        workers' runs of silent rounds; after the last round, its record as well."""
        state = {"strategy": self.strategy.state(), "rng": self.rng.bit_generator.state,
                 "misses": dict(self.misses), "errors": dict(self.errors),
                 "silent": [[w, n, since] for w, (n, since) in self._silent.items()]}
        if final_record is not None:
            state["final_record"] = final_record
        checkpoint.save(self.checkpoint, self.last_round, state)

    def resume(self) -> tuple[int, dict | None]:
        """Restarted: continue after the last checkpointed round.  Returns that round
        and, when it was the last one, its record (the final models are then due)."""
        rnd, state = checkpoint.load(self.checkpoint)
        self.strategy.restore(state["strategy"])
        self.rng.bit_generator.state = state["rng"]
        self.misses, self.errors = Counter(state["misses"]), Counter(state["errors"])
        try:
            self._silent = {w: (int(n), int(since)) for w, n, since in state.get("silent", [])}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"corrupt checkpoint: silent workers: {exc}") from exc
        self.last_round = rnd
        return rnd, state.get("final_record")

    def available(self) -> list:
        """Workers not known to be offline; if all are, wait (a round time-out at
        most) for one to come back, then try them all."""
        deadline = self.rt.clock() + self.run_spec.round_timeout
        while not self.rt.stopped and self.rt.clock() < deadline:
            online = [w for w in self.workers if w not in self.rt.away]
            if online:
                return online
            self.rt.idle(0.05)
        return list(self.workers)

    def expected(self, participants: list) -> list:
        """Participants to wait for: not those silent for SUSPECT_AFTER of their rounds
        in a row with nothing heard since (a stopped or unreachable worker costs the
        round time-out that often, not every round).  They still get their
        instructions, and their reply counts if it comes while others are awaited;
        any reply, even a late one, has them waited for again.  When all are silent,
        all are waited for: a round with nobody to wait for would pass empty at once."""
        waited = [w for w in participants if self._silent.get(w, (0, 0))[0] < SUSPECT_AFTER
                  or self.rt.heard_from(w, self._silent[w][1])]
        return waited or list(participants)

    def account(self, rnd: int, replies: list) -> None:
        """Each participant's run of unanswered rounds: (length, its first round)."""
        for r in replies:
            if r.ok or r.error["code"] not in ("timeout", "silent"):
                self._silent.pop(r.worker, None)
            else:
                n, since = self._silent.get(r.worker, (0, rnd))
                self._silent[r.worker] = (n + 1, since)

    def instruct(self, rnd: int, packets: dict) -> None:
        """Send each worker its packet of ``{worker: packet}``; the workers that share
        one packet object (FedAvg's global model) get it packed once."""
        # sent again to a worker restarted since (its old process may have got them)
        self._instructions, self._instructed_at = packets, self.rt.clock()
        groups: dict = {}
        for w, packet in packets.items():
            groups.setdefault(id(packet), (packet, []))[1].append(w)
        for packet, workers in groups.values():
            self.rt.send_many(workers, "control", rnd, packet)

    def reached(self, fields: dict) -> bool:
        """Whether this round's global (cluster, ensemble) accuracy reached the target."""
        acc = next((fields[k] for k in ("global_accuracy", "ensemble_accuracy")
                    if isinstance(fields.get(k), float)), None)  # cfl's is global too
        return self.target is not None and acc is not None and acc >= self.target

    def collect(self, rnd: int, participants: list) -> list | None:
        """Replies of this round's participants: content, or an error saying why not.
        None when a stop came before every awaited reply: the round is not played."""
        kind = self.strategy.reply_kind
        waited, began = self.expected(participants), self.rt.clock()
        packets = self._gather(kind, rnd, waited)
        if self.rt.stopped and not set(waited) <= packets.keys():
            return None
        replies = []
        for w in participants:
            packet = packets.get(w)
            if packet is None and (w in self.rt.away or self.rt.left_since(w, began)):
                # went offline meanwhile (and may be back already), or died
                replies.append(Reply(w, error={"code": "offline", "reason": "went offline"}))
                continue
            if packet is None:
                self.misses[w] += 1
                code = "timeout" if w in waited else "silent"
                replies.append(Reply(w, error={"code": code, "reason": f"no {kind}"}))
                continue
            try:
                num_samples = declared_size(packet.meta)
                content = self.strategy.decode(w, packet)
            except ValueError as exc:  # CodecError is a ValueError
                code = "temporal_gap" if isinstance(exc, TemporalGap) else \
                    getattr(exc, "code", "undecodable")  # a strategy's own (stc: desync)
                if code != "desync":  # a worker that says it is behind sent nothing wrong
                    self.rt.drop(code)
                replies.append(Reply(w, error={"code": code, "reason": str(exc)[:200]}))
                continue
            if isinstance(content, torch.Tensor) and not within_range(content):
                # NaN, inf, or so large that the mean or the server's residual overflows
                self.rt.drop("undecodable")  # counted as a gossip node counts it
                why = f"NaN, inf or beyond {MAX_MAGNITUDE:.3g}"
                replies.append(Reply(w, error={"code": "nonfinite", "reason": why}))
                continue
            replies.append(Reply(w, content=content, num_samples=num_samples,
                                 meta=dict(packet.meta)))
        for r in replies:
            if not r.ok:
                self.errors[r.error["code"]] += 1
        return replies

    def _gather(self, kind: str, rnd: int, waited: list) -> dict:
        """The round's replies, within its time-out; a worker restarted meanwhile (its
        old process got this round's instruction, its new one waits for the next) gets
        the instruction again and is waited for: it cost the round its whole time-out
        (5 s at `--round-timeout 5` for a worker back in about 2 s)."""
        deadline = self.rt.clock() + self.run_spec.round_timeout
        packets: dict = {}
        since = self._instructed_at
        while True:
            left = [w for w in waited if w not in packets]
            packets.update(self.rt.gather(kind, rnd, left, max(0.0, deadline - self.rt.clock()),
                                          rejoined_since=since))
            back = [w for w in left if w not in packets and self.rt.rejoined_since(w, since)]
            if not back or self.rt.stopped or self.rt.clock() >= deadline:
                return packets
            since = self.rt.clock()
            for w in back:
                if w in self._instructions:
                    self.rt.send(w, "control", rnd, self._instructions[w])

    @staticmethod
    def record_of(replies: list, fields: dict) -> dict:
        """A round's record: the strategy's fields and who answered."""
        return dict(fields, participants=len(replies), replies_ok=sum(r.ok for r in replies),
                    failed=[[r.worker, r.error["code"]] for r in replies if not r.ok])

    def final_state(self) -> None:
        """No model file of its own (``--save-models``): every worker holds its model."""
        return None

    def final_report(self) -> dict:
        models = self.strategy.reply_kind == "update"  # fd and cfd send soft labels down
        sent = self.rt.endpoint.counters.messages[("sent", "control")]
        return self.rt.final_counters(
            model_messages=sent if models else 0,
            misses=[[j, n] for j, n in self.misses.items()], errors=dict(self.errors),
            num_samples=0, num_params=self.num_params, rounds_done=self.last_round,
            absent=sorted(self.rt.away),
            strategy=self.strategy.summary())
