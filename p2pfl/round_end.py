"""What the launcher does when a round is complete (every node still running recorded
it): the progress line, ``--target-accuracy``, and the caller's ``on_round``
(:func:`p2pfl.run_cluster`).  Nothing here knows of sockets or processes: the launcher's
stop request and the bytes sent so far are handed in."""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["round_accuracy", "RoundEnd"]


def round_accuracy(rows: list, server: bool = False) -> float | None:
    """A completed round's accuracy for the progress bar and ``--target-accuracy``: in
    gossip the nodes' mean; in a server mode the coordinator's (global, cluster or
    ensemble) accuracy of this round's model, whatever worker records came in first
    (a worker evaluates before it trains: the previous round's model)."""
    if server:
        accs = [r[k] for r in rows for k in ("global_accuracy", "cluster_accuracy",
                                              "ensemble_accuracy") if r.get(k) is not None][:1]
    else:
        accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
    return float(np.mean(accs)) if accs else None


class RoundEnd:
    """Called as ``(round, rows)`` for each complete round.

    ``stop()`` asks the run to stop after it; ``sent()`` is the bytes sent so far.
    ``target_round`` is the round whose accuracy reached ``target``, ``asked_round``
    the one after which ``on_round`` returned True, and ``error`` what it raised
    (it is then called no more; the caller raises it once the summary is written).

    The caller's ``on_round`` is not called here, inside the launcher's handling of a
    message (where a Ctrl-C waits for the handling to end): its rounds queue, and
    :meth:`run_due` calls it between two handlings, and once more after the run.
    """

    def __init__(self, progress, *, nodes: int, server: bool, target: float | None,
                 on_round, stop, sent) -> None:
        self.progress, self.nodes, self.server, self.target = progress, nodes, server, target
        self.on_round, self.stop, self.sent = on_round, stop, sent
        self.target_round: int | None = None
        self.asked_round: int | None = None
        self.error: BaseException | None = None
        self._due: list = []  # (round, a copy of its records) for on_round

    def __call__(self, rnd: int, rows: list) -> None:
        mean = round_accuracy(rows, server=self.server)
        acc = f"acc {mean:.3f}" if mean is not None else "acc   -  "
        if not self.server and mean is not None and len(rows) < self.nodes:
            acc += f" ({len(rows)} of {self.nodes} nodes)"  # cut short by a stop, or a failure
        self.progress.update(rnd, f"{acc} | {self.sent() / 1e6:.2f} MB sent")
        if (self.target is not None and mean is not None and mean >= self.target
                and self.target_round is None):
            self.target_round = rnd
            what = "the coordinator's accuracy" if self.server else "mean accuracy"
            self._stop(f"target reached: {what} {mean:.4f} >= {self.target:g} at round {rnd}")
        if self.on_round is not None and self.error is None:  # nested values too: the
            self._due.append((rnd, copy.deepcopy(rows)))  # summary keeps some of them

    def run_due(self, ended: bool = False) -> None:
        """Call ``on_round`` for the rounds queued; ``ended``: the run is over, and an
        answer can stop nothing."""
        self.progress.tick()
        while self._due and self.error is None:
            rnd, rows = self._due.pop(0)
            try:
                answer = self.on_round(rnd, rows)
            except KeyboardInterrupt:  # a Ctrl-C in it is the run's, not the hook's
                raise
            except BaseException as exc:  # the caller's, raised after the summary: SystemExit,
                self.error = exc  # pytest.fail's and other BaseExceptions too
                if not ended:
                    self._stop(f"on_round raised {type(exc).__name__} at round {rnd}")
                return
            # a numpy comparison answers numpy's True
            if isinstance(answer, (bool, np.bool_)) and answer and self.asked_round is None \
                    and not ended:
                self.asked_round = rnd
                self._stop(f"on_round asked to stop at round {rnd}")
        self._due.clear()

    def _stop(self, why: str) -> None:
        self.progress.info(f"{why}; stopping the nodes")
        self.stop()

    def summary(self) -> dict:
        """Its ``summary.json`` keys."""
        err = self.error
        return {"target_reached_at_round": self.target_round,
                "stop_requested_at_round": self.asked_round,
                "on_round_error": None if err is None else f"{type(err).__name__}: {err}"}
