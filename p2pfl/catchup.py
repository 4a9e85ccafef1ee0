"""How a gossip node catches up when it comes back (from an offline period, or as a
restarted process): it asks its neighbours for their model and continues from their
answers, at the round they are at (``pull`` and ``catchup`` messages).  A mixin of
:class:`~p2pfl.node.GossipNode`, which owns the state it reads (the rule, the runtime,
the neighbours, the schedule's phases).
"""

from __future__ import annotations

__all__ = ["CatchUp"]


class CatchUp:
    """The catch-up of :class:`~p2pfl.node.GossipNode` (see the module docstring)."""

    def rejoin(self, rnd: int) -> int | None:
        """Back (or restarted) at round ``rnd``: ask the neighbours that are present for
        their model (and those that come back meanwhile), and continue from the first
        answer, at the round its sender is at; under ``--robust``, where a neighbour may
        lie, from every answer that comes within the round time-out, through the rule
        (:meth:`~.algorithms.base.GossipAlgorithm.rejoin_robust`), at the lower median
        of the rounds they are at.  Returns the round to continue with: ``rnd`` if
        nobody answered within the round time-out, or nobody can (each neighbour is
        away, or catching up itself); None if nobody answered and nothing is left to
        learn from (:meth:`nothing_left`)."""
        robust = self.algorithm.robust[0] != "none"
        replies = self._gather_catchups(rnd, robust)
        if not replies:
            return None if self.nothing_left() else rnd
        used = self._take_catchup(replies, robust)
        if self.asynchronous or not used:
            return rnd
        at = max(rnd, min(self._their_round(replies, used), self.run_spec.rounds))
        self.rt.advance(at)
        return at

    def _gather_catchups(self, rnd: int, robust: bool) -> dict:
        """Ask for catch-ups and wait: for the first answer, or (``robust``) for every
        neighbour's but one known silent (it missed its rounds and was not heard since,
        :meth:`expected`: it never answers, and the wait, in-process the host's idle
        seconds, outlasted the others' rounds)."""
        for j in self.neighbours:  # those away hear it when they are back
            if j not in self.rt.done:
                self.rt.send(j, "pull", rnd)
        asked = set(self.neighbours) - self.rt.away
        deadline = self.rt.clock() + self.run_spec.round_timeout
        waited = {j for j in self.neighbours if not (robust and self._silent(j))}
        replies: dict = {}
        while not self.rt.stopped:
            replies.update(self.rt.answers("catchup", rnd, waited - replies.keys(),
                                           asked, max(0.0, deadline - self.rt.clock()), robust))
            new = set(self.neighbours) - self.rt.away - asked
            if (replies and not robust) or not new or self.rt.clock() >= deadline:
                break
            for j in sorted(new, key=str):  # back meanwhile: ask it too
                self.rt.send(j, "pull", rnd)
            asked |= new
        return replies

    def _their_round(self, replies: dict, used: list) -> int:
        """The lower median, over the neighbours whose answers were used, of the round
        each is at: its answer's ``at``, or a later round it has sent since (the answer
        may have come early in a long wait).  Lying rounds, fewer than half, fall on
        either side of it.  0 where none is known."""
        rounds = []
        for j in used:
            at = replies[j].meta.get("at")
            at = at if isinstance(at, int) and not isinstance(at, bool) else 0
            rounds.append(max(at, self.rt.last_heard(j)))
        rounds.sort()
        return rounds[(len(rounds) - 1) // 2] if rounds else 0

    def _take_catchup(self, replies: dict, robust: bool) -> list:
        """Continue from the neighbours' catch-up ``replies``; return those used (an
        unusable one is dropped and counted).  Under a schedule a robust rejoin weighs
        each answer by its sender's weight over the period (:meth:`period_weights`)."""
        answers = {}
        for j in sorted(replies, key=str):
            try:
                if robust:
                    answers[j] = self.algorithm.read_catchup(replies[j])
                else:
                    self.learner.set_flat(self.algorithm.rejoin(replies[j]))
                    return [j]
            except ValueError:
                self.rt.drop("undecodable")
        if answers:
            weights = self.period_weights() if self.phases else None
            self.learner.set_flat(self.algorithm.rejoin_robust(self.learner.get_flat(),
                                                               answers, weights))
        return list(answers)

    def period_weights(self) -> dict:
        """Under a schedule: each neighbour's w_ij averaged over the period (0 in the
        phases that do not name it), the row a robust rejoin weighs every answer by;
        the last phase's row names only that phase's neighbours (a KeyError for the
        others' answers), and a restarted process's base row is all 0."""
        total = dict.fromkeys(self.neighbours, 0.0)
        for heard, _, _ in self.phases:
            for j, w in heard:
                total[j] = total.get(j, 0.0) + w
        return {j: w / len(self.phases) for j, w in total.items()}
