"""Per-node resolution for the plan: each node's merged settings, checked.

``learn_specs`` merges the run's options with each node's profile into its
:class:`~p2pfl.spec.LearnSpec` (model, optimiser, data share, device) and loads
what the nodes will share (the dataset, the partition, one model of each
kind), so that forked nodes inherit it; ``node_availability`` and ``node_codecs``
resolve each node's offline periods and codec.  Every bad value raises a
:class:`~p2pfl.errors.ConfigError` here, before a process starts.
"""

from __future__ import annotations

import dataclasses
import math

from .config import RunConfig
from .config_files import node_settings, profile_files
from .labels import node_number
from .errors import ConfigError
from .spec import LearnSpec
from .strategies import BEHAVIOURS
from .transport.availability import AvailabilitySpec, parse_churn, read_trace
from .transport.links import LinkSpec, parse_link

__all__ = ["check_codec", "learn_specs", "model_name", "node_availability", "node_codecs",
           "own_tables"]


def check_codec(spec: str) -> str:
    """A codec spec that builds (nodes code each parameter tensor with it)."""
    from .compression import make_codec

    if not isinstance(spec, str):  # a profile's TOML value
        raise ConfigError(f"compression must be a codec spec string, got {spec!r}")
    make_codec(spec)
    return spec


def _named(where: str, check, *args):
    """``check(*args)``; its ConfigError names ``where`` first (a profile's value: its node
    and file), unless ``where`` is empty (the run's own value, named by its flag)."""
    try:
        return check(*args)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _check_learning(learns: list) -> dict:
    """Load the dataset, compute the partition, build every distinct model once.

    The loaded data and the partition are cached in this process, so forked
    nodes inherit them instead of loading them again.
    """
    from .learner import build_run_model, shard_indices, shared_dataset, warm_up
    from .models import CUSTOM, probe_model

    first = learns[0]
    ds = shared_dataset(first.dataset, first.seed, first.data_dir)
    warm_up()
    shard_indices(first, 0)
    shapes = {}  # model name -> its parameters' shapes (its architecture)
    for learn in learns:
        if learn.model not in shapes:
            model = build_run_model(learn)
            shapes[learn.model] = tuple(tuple(p.shape) for p in model.parameters())
            if learn.model in CUSTOM:  # ours fit the data by construction
                probe_model(model, ds, type(CUSTOM[learn.model]).__name__)
    return shapes


def _check_message_size(shapes: dict) -> None:
    """A model travels dense as one frame (gossip, the server modes but fd and cfd): one
    beyond the wire's limit had ZeroMQ close every link without a word."""
    from .transport import wire

    limit = wire.DEFAULT_LIMITS.max_tensor_elems
    for name, model in shapes.items():
        size = sum(math.prod(s) for s in model)
        if size > limit:
            raise ConfigError(f"model {name!r} has {size:,} parameters; a message carries "
                              f"at most {limit:,} (1 GiB of float32)")


def model_name(cfg: RunConfig, name) -> str:
    from .models import CUSTOM, MODELS

    if not isinstance(name, str):
        raise ConfigError(f"model must be a name, got {name!r}")
    if name in CUSTOM:  # it exists in this process and the nodes it forks, nowhere else
        where = ("remote nodes (--listen)" if cfg.listen else "Ray actors" if
                 cfg.backend == "ray" else "restarted nodes (fresh processes)"
                 if cfg.restart != "no" else None)
        if where:
            raise ConfigError(f"a torch module passed as model= cannot reach {where}; "
                              "use a model name")
        return name
    if name.split(":", 1)[0] not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return name


def _number(options: dict, key: str, kind: type, where: str):
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}: {key} must be {'an integer' if kind is int else 'a number'}"
                          f", got {value!r}")
    return kind(value)


def _where(cfg: RunConfig, label) -> str:
    """How an error names a node: its label, and the profile file that set it."""
    return f"node {label!r}" + (f" ({profile_files(cfg)})" if cfg.profiles else "")


def _check_link(values: dict, where: str) -> None:
    """A link's values in range (LinkSpec's checks), an error naming where they came from."""
    try:
        LinkSpec(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _learn_spec(cfg: RunConfig, o: dict, shares: tuple, label, num_nodes: int) -> LearnSpec:
    where = _where(cfg, label)
    behaviour = o["behaviour"]
    if not isinstance(behaviour, str):
        raise ConfigError(f"{where}: behaviour must be a string, got {behaviour!r}")
    if behaviour not in BEHAVIOURS:
        raise ConfigError(f"{where}: unknown behaviour {behaviour!r}; valid: "
                          f"{', '.join(BEHAVIOURS)}")
    _check_link(o["link"], where)
    learn = _learn(cfg, o, shares, num_nodes, behaviour, where)
    if cfg.mode != "gossip" and learn.local_steps == 0 and learn.local_epochs == 0:
        raise ConfigError(f"{where}: local_steps 0 (no training) applies to gossip; server "
                          "modes train and evaluate every round")
    return learn


def _learn(cfg: RunConfig, o: dict, shares: tuple, num_nodes: int, behaviour: str,
           where: str) -> LearnSpec:
    """The node's LearnSpec; a value it refuses (a profile's) is named with its node."""
    values = dict(
        dataset=cfg.dataset, data_dir=cfg.data_dir, partition=cfg.partition, seed=cfg.seed,
        num_nodes=num_nodes, shares=shares, model=_named(
            "" if o["model"] == cfg.model else where, model_name, cfg, o["model"]),
        lr=_number(o, "lr", float, where), momentum=_number(o, "momentum", float, where),
        weight_decay=_number(o, "weight_decay", float, where),
        batch_size=_number(o, "batch_size", int, where),
        local_steps=_number(o, "local_steps", int, where),
        local_epochs=_number(o, "local_epochs", int, where), behaviour=behaviour,
        slowdown=_number(o, "slowdown", float, where), device=_device(o["device"], where))
    try:
        return LearnSpec(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _device(name, where: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: device must be a string, got {name!r}")
    return name


def _some(labels: list, most: int = 8) -> str:
    """The first labels of a run, for a message."""
    shown = ", ".join(str(x) for x in labels[:most])
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > most else "")


def own_tables(cfg: RunConfig, labels: list) -> list:
    """Each node's own profile table: ``[nodes.K]`` is the node labelled K, or, when no
    node has that label, the node of id K (as ``--availability`` traces are read)."""
    named = (cfg.node_overrides or {}).get("nodes", {})
    by_label = {str(x): i for i, x in enumerate(labels)}
    tables, keys, unknown = [{} for _ in labels], [None] * len(labels), []
    for key, table in named.items():
        i = by_label.get(key)
        number = node_number(key, canonical=True)
        if i is None and number is not None and number < len(labels):
            i = number
        if i is None:
            unknown.append(key)
        elif keys[i] is not None:
            raise ConfigError(f"{profile_files(cfg)}: [nodes.{keys[i]}] and [nodes.{key}] both "
                              f"name node {labels[i]!r}")
        else:
            tables[i], keys[i] = table, key
    if unknown:  # a typo, or the profile of another topology
        raise ConfigError(f"{profile_files(cfg)}: no node of this run is called "
                          f"{', '.join(sorted(unknown))} (nodes: {_some(labels)})")
    return tables


def learn_specs(cfg: RunConfig, labels: list) -> tuple[list, list]:
    """Per node: its merged options (run, profile default, its own) and its LearnSpec."""
    own = own_tables(cfg, labels)
    if cfg.link:  # the run's own, named as such before any node's
        _check_link(parse_link(cfg.link), "--link")
    per_node = [node_settings(cfg, own[i], label) for i, label in enumerate(labels)]
    shares = [_number(o, "data_share", float, f"node {labels[i]!r}")
              for i, o in enumerate(per_node)]
    for label, share in zip(labels, shares):  # inf for all was equal shares, in silence
        if not 0 < share < math.inf:
            raise ConfigError(f"{_where(cfg, label)}: data_share must be a positive, finite "
                              f"number, got {share!r}")
    # Equal shares (the usual case) travel as (): a node's spec stays small however
    # many nodes the run has (4,096 shares in each of 4,096 specs: 134 MB of pointers).
    equal = len(set(shares)) == 1
    shared = () if equal else tuple(shares)
    kind = str(cfg.partition).split(":", 1)[0]
    if shared and kind in ("dirichlet", "shards"):  # they size each node's data themselves
        raise ConfigError(f"data_share (a profile's) applies to the iid and groups "
                          f"partitions; --partition {cfg.partition} sizes each node's data "
                          "itself")
    learns = [_learn_spec(cfg, o, shared, labels[i], len(labels))
              for i, o in enumerate(per_node)]
    shapes = _check_learning(learns)
    if cfg.mode not in ("fd", "cfd"):  # those exchange soft labels, and may mix models
        _check_message_size(shapes)
        _check_one_model(cfg, learns, shapes)
    if cfg.backend == "local" and not cfg.listen:  # remote hosts may have other GPUs
        _check_devices(learns)
    return per_node, learns


def _check_one_model(cfg: RunConfig, learns: list, shapes: dict) -> None:
    """Nodes that exchange models, and a coordinator that aggregates them, must all
    have one architecture (``shapes``: each node model's parameter shapes): ``mlp`` and
    ``mlp:64`` are one, ``mlp`` and ``cnn`` two."""
    from .learner import build_run_model

    coordinator = model_name(cfg, cfg.model) if cfg.mode != "gossip" else None
    if coordinator is not None and coordinator not in shapes:  # the run's model is its
        model = build_run_model(dataclasses.replace(learns[0], model=coordinator))
        shapes = {**shapes, coordinator: tuple(tuple(p.shape) for p in model.parameters())}
    if len(set(shapes.values())) > 1:
        who = "nodes and coordinator" if cfg.mode != "gossip" else "nodes"
        source = profile_files(cfg) if cfg.profiles else "--model"
        raise ConfigError(f"{source}: the {who} of --mode {cfg.mode} must share one model, "
                          f"but have {', '.join(sorted(shapes))}; only fd and cfd mix models")


def _check_devices(learns: list) -> None:
    """``cuda`` on a host without a GPU is a usage error before any node starts."""
    from .learner import cuda_available

    wanted = sorted({learn.device for learn in learns if learn.device.startswith("cuda")})
    if not wanted:
        return
    if not cuda_available():
        raise ConfigError(f"device {wanted[0]} (--device or a profile): torch sees no CUDA "
                          "GPU on this machine (use auto or cpu)")
    import torch

    count = torch.cuda.device_count()
    beyond = [d for d in wanted if ":" in d and int(d.split(":", 1)[1]) >= count]
    if beyond:
        raise ConfigError(f"device {beyond[0]} (--device or a profile): this machine has "
                          f"{count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")


def node_availability(cfg: RunConfig, labels: list, per_node: list) -> list:
    """Each node's offline intervals (profile ``offline``, ``--availability``) and churn."""
    trace = read_trace(cfg.availability, labels) if cfg.availability else {}
    on, off, seed = parse_churn(cfg.churn) if cfg.churn else (0.0, 0.0, 0)
    out = []
    for i, o in enumerate(per_node):
        spans = o["offline"]
        if not isinstance(spans, list) or not all(
                isinstance(s, list) and len(s) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in s)
                for s in spans):
            raise ConfigError(f"node {labels[i]!r}: offline must be a list of "
                              f"[start_s, end_s] pairs, got {spans!r}")
        if any(isinstance(v, int) and v > 2 ** 53 for s in spans for v in s):
            raise ConfigError(f"node {labels[i]!r}: an offline time is out of range (at "
                              f"most 2^53 s, or inf; a profile's offline)")
        bad = [s for s in spans if not 0 <= s[0] < s[1]]  # NaN too
        if bad:
            raise ConfigError(f"node {labels[i]!r}: offline intervals need 0 <= start < end "
                              f"(seconds), got {bad[0]!r} (a profile's offline)")
        out.append(AvailabilitySpec(intervals=tuple(map(tuple, spans)) + tuple(trace.get(i, ())),
                                    churn_on_s=on, churn_off_s=off,
                                    seed=seed * 1_000_003 + i))
    if out and all(any(a <= 0 and b == math.inf for a, b in s.intervals) for s in out):
        raise ConfigError("every node is offline from the start for good (offline [0, inf]): "
                          "no round can run")
    return out


def node_codecs(cfg: RunConfig, per_node: list, labels: list) -> list:
    """Each node's codec spec (a profile may set its own), checked; an error in one a
    profile set names the node and the file (it named neither)."""
    return [_named("" if o["compression"] == cfg.compression else _where(cfg, label),
                   check_codec, o["compression"]) for o, label in zip(per_node, labels)]
