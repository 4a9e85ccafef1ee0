"""Typed, frozen, msgpack-safe node specs: what a node is told before it starts.

The plan (:mod:`p2pfl.plan`) resolves every option of a run once, before any
process starts, into one :class:`NodeSpec` per node.  A spec travels to its
node in the launcher's ``config`` message as plain data (:meth:`NodeSpec.to_wire`)
and is rebuilt and checked there (:func:`node_spec_from_wire`), so a node never
reads an option by a string key and never resolves an "auto" value itself.

The options of the node's gossip rule or server strategy are that rule's own
frozen dataclass (``Options`` on the rule's class); the registries in
:mod:`p2pfl.roles` say which class a rule name stands for.  This module imports
neither torch nor the registries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from .errors import ConfigError
from .scheduling import CPU_POLICIES
from .transport.availability import AvailabilitySpec
from .transport.links import LinkSpec

#: The largest count an option takes (rounds, steps, sizes): a run's integers travel
#: in msgpack headers and configs, and 2**64 did not fit there.
MAX_INT = 2**31 - 1
#: The slowest emulated device (``slowdown``): a node idles F − 1 times its compute.
MAX_SLOWDOWN = 1000.0
#: The largest learning rate and weight decay: they scale float32 tensors, and torch refuses
#: a factor beyond float32's range (every node failed with an overflow RuntimeError).
MAX_FLOAT32 = 3.4028234663852886e38

__all__ = ["is_device", "LearnSpec", "RuntimeSpec", "ServerInfo", "NodeSpec", "options_from_wire",
           "plain_label"]


def is_device(name) -> bool:
    """A ``--device`` value: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return isinstance(name, str) and (name in ("auto", "cpu", "cuda") or (
        name.startswith("cuda:") and name[5:].isdigit()))


@dataclass(frozen=True)
class LearnSpec:
    """A node's data, model and local SGD (its :class:`~p2pfl.learner.Learner`)."""

    dataset: str
    data_dir: str | None
    partition: str
    seed: int
    num_nodes: int
    shares: tuple  # data share per node; () when all are equal
    model: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    local_steps: int
    local_epochs: int
    behaviour: str = "honest"
    colluders: int = 0  # server-mode alie: how many workers attack together (its z)
    slowdown: float = 1.0  # local work takes this many times as long as it really took
    momentum_mode: str = "local"  # "quasi-global" for CHOCO (training.QuasiGlobalMomentum)
    device: str = "auto"  # auto (a GPU when the node's host has one), cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        object.__setattr__(self, "shares", tuple(float(s) for s in self.shares))
        if not 0 < self.lr <= MAX_FLOAT32:
            raise ConfigError(f"lr must be positive and finite in float32 (at most "
                              f"{MAX_FLOAT32:.4g}), got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay <= MAX_FLOAT32:  # NaN fails too
            raise ConfigError(f"weight_decay must be >= 0 and finite in float32 (at most "
                              f"{MAX_FLOAT32:.4g}), got {self.weight_decay}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.local_steps < 0 or self.local_epochs < 0:
            raise ConfigError("local_steps and local_epochs must be >= 0")
        if self.shares and (len(self.shares) != self.num_nodes
                            or not all(s > 0 for s in self.shares)):
            raise ConfigError("data_share must be positive for every node")
        if self.momentum_mode not in ("local", "quasi-global"):
            raise ConfigError(f"momentum_mode must be local or quasi-global, "
                              f"got {self.momentum_mode!r}")
        if not is_device(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 1 <= self.slowdown <= MAX_SLOWDOWN:
            raise ConfigError(f"slowdown must be in [1, {MAX_SLOWDOWN:g}], got {self.slowdown}")
        for name in ("batch_size", "local_steps", "local_epochs"):
            if getattr(self, name) > MAX_INT:
                raise ConfigError(f"{name} must be at most {MAX_INT}, got {getattr(self, name)}")


@dataclass(frozen=True)
class RuntimeSpec:
    """How a node runs its rounds: their number, time-outs and evaluation cadence."""

    rounds: int
    round_timeout: float
    start_timeout: float
    eval_every: int = 1
    consensus: bool = True
    schedule: str = "sync"  # or "async": no round barrier (gossip only)
    # Nodes come and go (churn, restarts): a node says when it leaves (offline, or
    # done with its rounds) so that its neighbours stop waiting for it.
    presence: bool = False
    exchange_only: bool = False  # --local-steps 0: no training, no evaluation
    # the run's codec names, sent as their index in this table (transport/wire.py)
    codec_names: tuple = ()
    cpu_policy: str = "batch"  # the node process's scheduling policy (scheduling.py)
    save_models: bool = False  # send the final model to the launcher (model_files.py)

    def __post_init__(self) -> None:
        if self.cpu_policy not in CPU_POLICIES:
            raise ConfigError(f"cpu_policy must be one of {', '.join(CPU_POLICIES)}, "
                              f"got {self.cpu_policy!r}")
        names = self.codec_names
        if (not isinstance(names, tuple) or len(names) > 255 or len(set(names)) != len(names)
                or not all(isinstance(n, str) and 0 < len(n) <= 256 for n in names)):
            raise ConfigError("codec_names must be at most 255 distinct names of 1 to 256 "
                              "characters")

    def evaluates(self, rnd: int) -> bool:
        """Whether round ``rnd`` is evaluated: every ``eval_every``-th and the last
        (none when the run only exchanges)."""
        if self.exchange_only:
            return False
        return rnd % self.eval_every == 0 or rnd == self.rounds


@dataclass(frozen=True)
class ServerInfo:
    """What the coordinator knows of its workers: labels, ground-truth groups, data sizes."""

    labels: tuple = ()
    groups: tuple = ()
    # workers whose --behaviour is not honest, for evaluation only (as groups): CFL's
    # global accuracy is an honest worker's, not that of the liars' own clusters
    byzantine: tuple = ()
    checkpoint: str = ""  # where the coordinator saves its state after each round
    # --target-accuracy: the coordinator ends the run after the round whose global (or
    # cluster, or ensemble) accuracy reaches it, not a round later when the launcher asks
    target_accuracy: float | None = None


@dataclass(frozen=True)
class NodeSpec:
    """Everything one node needs, resolved and validated.

    ``rule`` names the node's gossip algorithm (role ``gossip``) or server
    strategy (roles ``worker`` and ``coordinator``); ``options`` is that rule's
    own options dataclass.  ``neighbours`` are ``(id, mixing weight)`` pairs.
    ``phases`` (a time-varying topology, :mod:`p2pfl.topology.schedules`): for each
    phase, ``(heard, w_ii, sent to)``: the ``(j, w_ij)`` pairs the node mixes, its own
    weight, and the neighbours that hear it (both empty in a phase it idles); round t
    plays phase (t − 1) mod len(phases).  Empty: every round mixes
    with every neighbour, with ``neighbours``' weights.
    """

    id: int
    label: object
    role: str
    neighbours: tuple
    self_weight: float
    learn: LearnSpec
    runtime: RuntimeSpec
    rule: str
    options: object
    server: ServerInfo = field(default_factory=ServerInfo)
    link: LinkSpec = field(default_factory=LinkSpec)
    availability: AvailabilitySpec = field(default_factory=AvailabilitySpec)
    phases: tuple = ()

    @property
    def peers(self) -> list:
        return [j for j, _ in self.neighbours]

    @property
    def weights(self) -> dict:
        return {j: w for j, w in self.neighbours}

    def to_wire(self) -> dict:
        """Plain data (msgpack- and JSON-safe) for the ``config`` message."""
        return {
            "id": self.id, "label": self.label, "role": self.role,
            "neighbours": [[j, w] for j, w in self.neighbours],
            "self_weight": self.self_weight,
            "learn": _plain(self.learn), "runtime": _plain(self.runtime),
            "rule": self.rule, "options": _plain(self.options),
            "server": _plain(self.server), "link": _plain(self.link),
            "availability": _plain(self.availability),
            "phases": [[[[j, w] for j, w in heard], own, list(sent)]
                       for heard, own, sent in self.phases],
        }


def _plain(obj):
    """A dataclass as a map of its fields, recursively; other values as they are
    (msgpack writes tuples as arrays).  ``dataclasses.asdict`` deep-copies every
    element: 8 s for the specs of 1,024 nodes with a ``shares`` of 1,024 each."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    return obj


def _build(cls, data, what: str):
    """``cls(**data)`` for plain data from the wire; a bad shape is a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a map, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def options_from_wire(options_cls, data) -> object:
    """A rule's options dataclass from plain data."""
    return _build(options_cls, data, "options")


def node_spec_from_wire(data: dict, options_cls) -> NodeSpec:
    """Rebuild a :class:`NodeSpec` sent by :meth:`NodeSpec.to_wire`, checking every part."""
    if not isinstance(data, dict):
        raise ConfigError("node spec: expected a map")
    try:
        neighbours = tuple((int(j), float(w)) for j, w in data["neighbours"])
        phases = _phases_from_wire(data.get("phases", ()), {j for j, _ in neighbours})
        return NodeSpec(
            id=int(data["id"]), label=data["label"], role=str(data["role"]),
            neighbours=neighbours, self_weight=float(data["self_weight"]),
            learn=_build(LearnSpec, data["learn"], "learn"),
            runtime=_build(RuntimeSpec, data["runtime"], "runtime"),
            rule=str(data["rule"]), options=options_from_wire(options_cls, data["options"]),
            server=_build(ServerInfo, data.get("server", {}), "server"),
            link=_build(LinkSpec, data.get("link", {}), "link"),
            availability=_build(AvailabilitySpec, data.get("availability", {}), "availability"),
            phases=phases)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"node spec: {type(exc).__name__}: {exc}") from None


def _phases_from_wire(data, peers: set) -> tuple:
    """A node's ``phases`` from plain data: each names neighbours only, and its row of
    W_k sums to 1 (a phase that breaks either is a ConfigError, not a mix)."""
    out = []
    for heard, own, sent in data:
        heard = tuple((int(j), float(w)) for j, w in heard)
        own, sent = float(own), tuple(int(j) for j in sent)
        if not {j for j, _ in heard} | set(sent) <= peers:
            raise ConfigError("node spec: a phase names a node that is not a neighbour")
        weights = [own, *(w for _, w in heard)]
        if not all(0 <= w <= 1 for w in weights) or abs(sum(weights) - 1.0) > 1e-9 or \
                len({j for j, _ in heard}) < len(heard):  # 0 <= NaN is False
            raise ConfigError("node spec: a phase's weights do not make a row of a "
                              "mixing matrix")
        out.append((heard, own, sent))
    return tuple(out)


def plain_label(label):
    """Labels go through msgpack and JSON: keep ints and strings, stringify the rest."""
    import numpy as np

    if isinstance(label, (bool, np.bool_)):
        return str(label)
    if isinstance(label, (int, np.integer)):
        return int(label)
    return label if isinstance(label, str) else str(label)
