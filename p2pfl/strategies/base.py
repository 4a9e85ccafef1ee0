"""The strategy interface: hooks around the one shared server round loop.

The coordinator's loop (:mod:`p2pfl.server.coordinator`) runs, per round::

    participants = strategy.select(rnd, workers, rng)
    instructions = strategy.configure(rnd, participants)      # {worker: Packet}
    ... send "control", collect strategy.reply_kind ...
    replies      = [Reply(worker, content=strategy.decode(worker, packet)) | Reply(error=...)]
    strategy.aggregate(rnd, replies)
    record       = strategy.evaluate(rnd)
    strategy.done(rnd)                                         # stop early?

and at the end ``strategy.finalize(worker)`` gives each worker its final
model.  A worker runs the mirror-image :class:`ClientStrategy` hooks:
``apply`` (the instruction), ``fit`` (local work), ``reply`` (the upstream
packet) and ``finish`` (the final instruction).  Neither side touches a
socket: packets are :class:`~p2pfl.algorithms.base.Packet` objects, and the
aggregation maths are pure functions of tensors.

Checkpoints (coordinator restart).  ``state()`` returns everything a server
strategy carries from one round to the next -- models, residuals, caches,
codec generators, bookkeeping -- as a dict of plain values (str or int keys,
lists, tuples, ints, floats, str, bool, None, bytes), numpy arrays and torch
tensors, which :mod:`p2pfl.server.checkpoint` writes without pickle.  It
holds copies, and it is taken between rounds (after ``aggregate``).
``restore(state)``, on a freshly built strategy with the same
:class:`ServerContext`, makes it behave bit for bit like the one the state was
taken from: the same ``configure`` packets, ``evaluate`` records,
``finalize`` packets and ``summary``.  What the context determines (options,
the public set, the initial model's size) is not part of the state; it is
checked, and a state that does not fit (another strategy, another model size)
raises ``ValueError``.  The base class supports no checkpoints: both raise
``NotImplementedError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..algorithms.attacks import GOSSIP_BEHAVIOURS, SIGN_FLIP_SCALE, alie_z
from ..algorithms.base import Packet, dense_packet, dense_tensor
from ..errors import ConfigError

__all__ = ["Reply", "ServerContext", "Strategy", "ClientStrategy", "Packet", "weighted_mean",
           "round_field", "dense_packet", "dense_tensor", "BEHAVIOURS", "behave",
           "model_from_state"]

#: Every behaviour a node profile may name (algorithms/attacks.py describes them).
BEHAVIOURS = GOSSIP_BEHAVIOURS


@dataclass
class Reply:
    """One worker's answer in one round: ``content`` or ``error``, never both.

    ``error`` is ``{"code": ..., "reason": ...}`` (codes: ``timeout``,
    ``undecodable``).  ``num_samples`` is the worker's data size.
    """

    worker: int
    content: object = None
    error: dict | None = None
    num_samples: int = 1
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.content is None) == (self.error is None):
            raise ValueError("a reply carries content or an error, exactly one of them")

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ServerContext:
    """What a server strategy may know: its options, the run and the workers.

    ``options`` is the strategy's own options dataclass (resolved by the plan),
    ``learn`` and ``runtime`` the run's :class:`~p2pfl.spec.LearnSpec` and
    :class:`~p2pfl.spec.RuntimeSpec`.  ``init`` is the initial flat model
    (every node builds the same one), ``evaluate(flat, group)`` returns (loss,
    accuracy) on the test set as group ``group`` labels it, and ``groups``
    holds the ground-truth group of each worker under ``--partition groups:K``
    (used for evaluation only), ``byzantine`` the workers whose behaviour is not
    honest (evaluation only as well); ``shapes`` are the parameter tensors' shapes.
    """

    options: object
    learn: object
    runtime: object
    workers: list
    labels: dict
    init: torch.Tensor | None = None
    evaluate: object = None
    groups: dict = field(default_factory=dict)
    byzantine: frozenset = frozenset()
    shapes: tuple | None = None  # parameter shapes: codecs code each tensor on its own


class Strategy:
    """Server side.  Subclasses override the hooks they need."""

    name = "base"
    reply_kind = "update"

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.rounds = int(ctx.runtime.rounds)

    def select(self, rnd: int, workers: list, rng: np.random.Generator) -> list:
        """Participants: a ``participation`` fraction of the workers (at least one)."""
        m = max(1, int(round(self.options.participation * len(workers))))
        if m >= len(workers):
            return list(workers)
        return sorted(int(w) for w in rng.choice(workers, m, replace=False))

    def configure(self, rnd: int, participants: list) -> dict:
        """``{worker: Packet}``: what each participant receives this round."""
        raise NotImplementedError

    def decode(self, worker: int, packet: Packet):
        """A reply packet's content; raise ``ValueError`` if it is unreadable."""
        raise NotImplementedError

    def aggregate(self, rnd: int, replies: list) -> None:
        """Fold this round's replies (some may be errors) into the state."""
        raise NotImplementedError

    def evaluate(self, rnd: int) -> dict:
        """Fields for the coordinator's record (never the key ``accuracy``)."""
        return {}

    def done(self, rnd: int) -> bool:
        return rnd >= self.rounds

    def finalize(self, worker: int) -> Packet:
        """The final instruction for ``worker`` (its final model)."""
        raise NotImplementedError

    def summary(self) -> dict:
        """Fields added to ``summary.json``."""
        return {}

    def state(self) -> dict:
        """Everything that persists across rounds, for a checkpoint (module docstring)."""
        raise NotImplementedError(f"strategy {self.name!r} ({type(self).__name__}) does not "
                                  "support checkpoints: it defines no state()")

    def restore(self, state: dict) -> None:
        """Continue from ``state()`` of a strategy built with the same context."""
        raise NotImplementedError(f"strategy {self.name!r} ({type(self).__name__}) does not "
                                  "support checkpoints: it defines no restore()")

    def _state_fields(self, state: dict, *keys: str) -> list:
        """``state[key]`` for each key, after checking the state is this strategy's."""
        if not isinstance(state, dict) or state.get("strategy") != self.name:
            got = state.get("strategy") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"checkpoint state of strategy {got!r}, expected {self.name!r}")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"{self.name} checkpoint state lacks {', '.join(missing)}")
        return [state[k] for k in keys]


class ClientStrategy:
    """Worker side: apply the instruction, work locally, reply."""

    name = "base"
    reply_kind = "update"

    def __init__(self, learner, options, learn) -> None:
        self.learner = learner
        self.options = options
        self.behaviour = learn.behaviour
        if self.behaviour not in BEHAVIOURS:
            raise ConfigError(f"unknown behaviour {self.behaviour!r}; valid: "
                              f"{', '.join(BEHAVIOURS)}")
        self.rng = np.random.default_rng(learn.seed * 31 + 17 + learner._node_id)
        self.alie_z = alie_z(learn.num_nodes, max(1, learn.colluders))
        if self.behaviour == "label_flip":
            learner.flip_labels()

    def apply(self, rnd: int, packet: Packet) -> None:
        raise NotImplementedError

    def fit(self) -> float:
        """Local training; returns the mean loss."""
        return self.learner.train()

    def reply(self, rnd: int) -> Packet:
        raise NotImplementedError

    def finish(self, packet: Packet) -> None:
        """Take the final instruction (by default: like any other)."""
        self.apply(-1, packet)


# ------------------------------------------------------------- pure functions
def round_field(meta: dict, key: str, most: int, default: int | None = None,
                least: int = 0) -> int:
    """``meta[key]`` (``default`` when absent, if given), a round number: an integer in
    [least, most]; ValueError, an unusable message, otherwise (a bool is no integer)."""
    value = meta.get(key, default)
    if type(value) is not int or not least <= value <= most:
        raise ValueError(f"{key!r} is not a round in [{least}, {most}]")
    return value


def model_from_state(value, like: torch.Tensor, what: str = "model") -> torch.Tensor:
    """A checkpointed model, checked to have ``like``'s shape and dtype (a copy)."""
    if (not isinstance(value, torch.Tensor) or value.dtype != like.dtype
            or value.shape != like.shape):
        raise ValueError(f"checkpoint {what} should be a {like.dtype} tensor of shape "
                         f"{tuple(like.shape)}")
    return value.detach().clone()


def weighted_mean(tensors: list, weights: list) -> torch.Tensor:
    """Σ_i w_i x_i / Σ_i w_i (FedAvg aggregation weighted by data size, ALGORITHMS.md)."""
    if not tensors:
        raise ValueError("nothing to average")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if not float(w.sum()) > 0:
        raise ValueError("weights must sum to a positive number")
    stack = torch.stack([t.to(torch.float64) for t in tensors])
    return ((w / w.sum())[:, None] * stack).sum(0).to(torch.float32)


def behave(update: torch.Tensor, behaviour: str, rng: np.random.Generator) -> torch.Tensor:
    """A worker's update as its behaviour sends it (CFL's Byzantine settings).

    ``random`` (Byzantine): a Gaussian direction with ``RANDOM_SCALE`` (100) times
    the norm the honest update would have had -- large enough that plain FedAvg
    collapses, as in the CFL paper's Byzantine table; ``noisy``: the update plus
    Gaussian noise of the same norm; ``sign_flip``: −4 times the update (the
    scale of the gossip attack); ``honest``, ``silent`` (the worker sends
    nothing) and ``label_flip`` (which acts on the data): unchanged.
    """
    if behaviour in ("honest", "label_flip", "silent", "alie"):  # alie: FedAvgClient._alie
        return update
    if behaviour == "sign_flip":  # −k times the honest update
        return -SIGN_FLIP_SCALE * update
    noise = torch.from_numpy(rng.standard_normal(update.numel()).astype(np.float32))
    noise = noise * (update.norm() / max(float(noise.norm()), 1e-12))
    if behaviour == "random":
        return noise * RANDOM_SCALE
    return update + noise


#: A random (Byzantine) worker's update norm, relative to an honest update's.
#: (At 1-20x the digits MLP shrugs the noise off; at 100x FedAvg falls to ~0.14.)
RANDOM_SCALE = 100.0
