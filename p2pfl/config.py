"""Run configuration: one frozen dataclass of every option, checked when built.

Its values come from the defaults below, a ``--config`` TOML file and flags, and
per-node settings from a profile file (:mod:`~p2pfl.config_files`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields

from .errors import ConfigError
from .scheduling import CPU_POLICIES
from .spec import MAX_FLOAT32, MAX_INT, MAX_SLOWDOWN, is_device

__all__ = ["RunConfig", "NODE_KEYS", "SERVER_MODES", "MODES", "MODE_OPTIONS"]

#: The server modes: the names in ``strategies.STRATEGIES``, in its order (a test
#: checks that they agree).  Written out so that reading a configuration, and
#: refusing a bad one, does not import the strategies and with them torch.
SERVER_MODES = ("fedavg", "stc", "cfl", "fd", "cfd")
#: Run modes: gossip, and one per registered server strategy.
MODES = ("gossip",) + SERVER_MODES
TRANSPORTS = ("tcp", "ipc", "inproc")
#: Soft-label frame coders of FD and CFD, as ``strategies/options.py`` names them
#: (not imported from there: reading a configuration must not import the strategies).
FD_CODERS = ("packed", "cabac", "cabac:temporal")

#: Defaults that depend on the mode.  Gossip mixes after few local steps, as
#: D-PSGD and CHOCO-SGD do (their papers gossip after every step); 2 steps at
#: lr 0.1 were tuned on benchmarks/compressed_gossip.py, where they let CHOCO
#: with stc:0.05+golomb reach 0.85 with >= 50x fewer bytes than dense gossip
#: while ring:8 digits still reaches 0.93 in 30 rounds.  Server modes use
#: FedAvg's communication delay: 10 local steps at lr 0.05.
MODE_DEFAULTS = {
    "gossip": {"local_steps": 2, "lr": 0.1},
    "server": {"local_steps": 10, "lr": 0.05},
}

#: Options a node profile may set for single nodes.
NODE_KEYS = frozenset({
    "data_share", "model", "local_steps", "local_epochs", "lr", "momentum",
    "weight_decay", "batch_size", "compression", "behaviour", "link", "slowdown", "offline",
    "device",
})


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run; CLI flags and TOML keys have the same names."""

    # what runs
    mode: str = "gossip"
    topology: str | None = None  # ring:8, unless a server run names its workers by --nodes
    nodes: int | None = None
    rounds: int = 30
    seed: int = 0
    # data and model
    dataset: str = "digits"
    data_dir: str | None = None
    partition: str = "iid"
    model: str = "mlp"
    device: str = "auto"  # where node models train: auto (a GPU if present), cpu, cuda[:N]
    # local SGD
    local_steps: int | None = None  # mode default: MODE_DEFAULTS
    local_epochs: int = 0
    batch_size: int = 32
    lr: float | None = None  # mode default: MODE_DEFAULTS
    momentum: float = 0.9
    weight_decay: float = 0.0
    # gossip
    algorithm: str = "auto"
    schedule: str = "sync"
    mixing: str = "metropolis"
    compression: str = "none"
    error_feedback: str = "auto"
    gamma: float | None = None
    # server modes (defaults documented in p2pfl/strategies/*.py)
    participation: float = 1.0
    robust: str = "none"  # gossip: none, clip[:TAU], trimmed:BETA (algorithms/robust.py)
    aggregator: str = "auto"  # server modes: mean, median, trimmed:B, krum:F, ... (robust.py)
    compression_down: str = "auto"
    stc_cache: int = 10
    filter_scaling: str = "off"  # stc: a scale factor per conv filter with each update
    cfl_eps1: float = 0.6
    cfl_eps2: float = 1.2
    cfl_warmup: int = 10
    public_size: int = 200
    distill_steps: int = 5
    fd_bits: int | None = None
    fd_delta: str = "auto"
    fd_coder: str = "packed"
    # runtime
    transport: str = "tcp"
    in_process: bool = False
    procs: int | None = None  # host processes of an in-process cluster (default: the cores)
    host: str | None = None  # tcp bind address: 127.0.0.1, or with Ray each host's own IP
    listen: str | None = None
    backend: str = "local"  # local (processes of this machine) or ray (Ray actors)
    ray_address: str | None = None  # a running Ray cluster; None: start one here
    node_cpus: float | None = None  # Ray resources per node (None: an equal share, <= 1)
    node_gpus: float = 0.0
    secure: bool | None = None  # CurveZMQ on every socket (transport/security.py); None: off
    keys: str | None = None  # key folder from `p2pfl keys generate` (implies secure)
    round_timeout: float = 10.0
    start_timeout: float = 60.0
    lost_after: float | None = None  # --listen: a remote node's connection down this long
    cpu_policy: str = "batch"  # node processes' scheduling policy (scheduling.py)
    eval_every: int = 1
    target_accuracy: float | None = None
    consensus: bool = True
    save_models: bool = False  # each node's final model to OUT/models/node-ID.pt
    # emulated network and compute (every node; profiles refine per node)
    link: str | None = None
    slowdown: float = 1.0
    churn: str | None = None
    restart: str = "no"  # or on-failure[:N]: the launcher restarts a node that died
    availability: str | None = None
    profiles: str | tuple | None = None  # a file, or several (profile_files)
    out: str | None = None
    quiet: bool = False
    node_overrides: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, MODES)
        _one_of("cpu_policy", self.cpu_policy, CPU_POLICIES)
        self._check_workers()
        defaults = MODE_DEFAULTS["gossip" if self.mode == "gossip" else "server"]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _one_of("transport", self.transport, TRANSPORTS)
        _one_of("schedule", self.schedule, ("sync", "async"))
        _one_of("error_feedback", self.error_feedback, ("auto", "on", "off"))
        _one_of("fd_delta", self.fd_delta, ("auto", "on", "off"))
        _one_of("fd_coder", self.fd_coder, FD_CODERS)
        _one_of("filter_scaling", self.filter_scaling, ("on", "off"))
        if self.filter_scaling == "on" and self.mode not in ("stc", "fedavg"):
            raise ConfigError("--filter-scaling applies to --mode stc and fedavg (sparse "
                              "updates to a server)")
        _check_mode_options(self)
        _check_error_feedback(self)
        for name in ("stc_cache", "cfl_warmup", "public_size", "distill_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.mode in ("fd", "cfd") and self.public_size < 1:
            raise ConfigError(f"--public-size must be >= 1 for --mode {self.mode} (the soft "
                              f"labels are taken on it), got {self.public_size}")
        if self.fd_bits is not None and not 0 <= self.fd_bits <= 8:
            raise ConfigError(f"--fd-bits must be in [0, 8] (0: float32), got {self.fd_bits}")
        if not (self.cfl_eps1 >= 0 and self.cfl_eps2 >= 0):
            raise ConfigError("--cfl-eps1 and --cfl-eps2 must be >= 0")
        for name in ("rounds", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("local_steps", "local_epochs", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.seed > 2**63 - 1:  # torch's and numpy's seeds are 64-bit
            raise ConfigError(f"--seed must be below 2**63, got {self.seed}")
        if self.exchange_only and self.target_accuracy is not None:
            raise ConfigError("--target-accuracy needs evaluation, and --local-steps 0 "
                              "(exchange only) evaluates nothing")
        if self.exchange_only and self.mode != "gossip":
            raise ConfigError("--local-steps 0 (exchange only, no training) applies to gossip; "
                              "server modes train and evaluate every round")
        if not 0 < self.lr <= MAX_FLOAT32:
            raise ConfigError(f"--lr must be positive and finite in float32 (at most "
                              f"{MAX_FLOAT32:.4g}), got {self.lr}")
        if not 0 <= self.weight_decay <= MAX_FLOAT32:  # NaN fails too
            raise ConfigError(f"--weight-decay must be >= 0 and finite in float32 (at most "
                              f"{MAX_FLOAT32:.4g}), got {self.weight_decay}")
        if not 1 <= self.slowdown <= MAX_SLOWDOWN:
            raise ConfigError(f"--slowdown must be in [1, {MAX_SLOWDOWN:g}], got {self.slowdown}")
        self._check_sizes()
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.participation <= 1:
            raise ConfigError(f"--participation must be in (0, 1], got {self.participation}")
        if self.gamma is not None and not 0 < self.gamma <= 1:
            raise ConfigError(f"--gamma must be in (0, 1], got {self.gamma}")
        for name in ("round_timeout", "start_timeout", "lost_after"):  # the supervision
            value = getattr(self, name)  # multiplies them: inf never fails a stopped node
            if value is not None and not 0 < value < math.inf:
                raise ConfigError(f"--{_flag(name)} must be positive and finite (seconds), "
                                  f"got {value}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"--target-accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.nodes is not None and self.nodes < 1:
            raise ConfigError(f"--nodes must be >= 1, got {self.nodes}")
        if not is_device(self.device):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.data_dir is not None:
            kind, _, path = str(self.dataset).partition(":")
            if kind not in ("mnist", "cifar10") or path:
                raise ConfigError(f"--data-dir is the folder of mnist or cifar10 files given "
                                  f"without :PATH; it does not apply to --dataset {self.dataset}")
        self._check_hosting()
        self._check_backend()
        if self.keys is not None:
            if not os.path.isdir(self.keys):
                raise ConfigError(f"--keys {self.keys}: no such folder")
            if self.secure is False:
                raise ConfigError("--keys makes the run secure; it does not combine with "
                                  "--no-secure (secure = false)")
            object.__setattr__(self, "secure", True)
        object.__setattr__(self, "secure", bool(self.secure))
        if self.listen and self.transport != "tcp":
            raise ConfigError(f"--listen takes remote nodes over tcp; --transport "
                              f"{self.transport} does not apply")
        if self.secure and self.transport == "inproc":
            raise ConfigError("--secure does not combine with --transport inproc: every node "
                              "is a thread of one process, and CURVE does not run over inproc")
        if self.secure and self.listen and self.keys is None:
            raise ConfigError("--secure with --listen needs --keys DIR: remote nodes need keys "
                              "made ahead (p2pfl keys generate DIR --nodes N)")

    def _check_sizes(self) -> None:
        """Counts within MAX_INT (2**64 failed in msgpack after the nodes started), and
        no empty text where an address or a path belongs (``--config ''`` with an unset
        shell variable ran on the defaults)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type.startswith("int") and f.name != "seed" and value is not None \
                    and value > MAX_INT:
                raise ConfigError(f"--{_flag(f.name)} must be at most {MAX_INT}, got {value}")
        for name in ("host", "profiles", "availability", "listen", "churn", "data_dir", "out",
                     "link", "keys"):
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                raise ConfigError(f"--{_flag(name)} is empty")
            if isinstance(value, tuple) and not all(v.strip() for v in value):
                raise ConfigError(f"--{_flag(name)} names an empty file")

    def _check_workers(self) -> None:
        """Gossip nodes are the topology's; a server run's workers are ``--nodes N`` or
        the topology's nodes, never both."""
        if self.nodes is not None and self.mode == "gossip":
            raise ConfigError("--nodes applies to server modes; gossip runs one node per "
                              "node of --topology")
        if self.nodes is not None and self.topology is not None:
            raise ConfigError("--nodes and --topology both give the workers of a server run; "
                              "give one of them")
        if self.nodes is None and self.topology is None:
            object.__setattr__(self, "topology", "ring:8")

    def _check_hosting(self) -> None:
        if self.host not in (None, "127.0.0.1") and (self.in_process  # (set when left out)
                                                     or self.transport != "tcp"):
            why = ("--in-process hosts talk over ipc and inproc" if self.in_process else
                   f"--transport {self.transport} binds none")
            raise ConfigError(f"--host is the tcp bind address; {why}, so it does not apply")
        self._check_procs()

    def _check_procs(self) -> None:
        """``--in-process``: actors in ``--procs`` host processes over ipc (tcp is the
        default and means "not chosen"), or in the launcher over inproc (one process)."""
        if self.lost_after is not None and not self.listen:
            raise ConfigError("--lost-after is how long a remote node's connection may be "
                              "down; it needs --listen")
        if self.listen and self.in_process:
            raise ConfigError("--listen waits for `p2pfl node` processes; --in-process and "
                              "--procs host the nodes here, so they do not apply")
        if self.listen and self.host not in (None, "127.0.0.1"):  # ignored in silence
            raise ConfigError("--host is where the nodes the launcher starts bind; with "
                              "--listen each `p2pfl node` takes its own --host")
        if self.procs is not None and not self.in_process:
            raise ConfigError("--procs needs --in-process (it sets how many processes host "
                              "the node actors)")
        if self.procs is not None and self.procs < 1:
            raise ConfigError(f"--procs must be >= 1, got {self.procs}")
        if self.transport == "inproc" and not self.in_process:
            raise ConfigError("--transport inproc needs --in-process (one process for all nodes)")
        if self.transport == "inproc" and (self.procs or 1) > 1:
            raise ConfigError("--transport inproc needs --procs 1 (inproc does not cross "
                              "processes)")
        if self.in_process and self.transport == "tcp":
            object.__setattr__(self, "transport", "ipc")
        if self.in_process and self.procs is None:
            object.__setattr__(self, "procs", 1 if self.transport == "inproc" else _cores())

    def _check_backend(self) -> None:
        """``--backend ray``: node processes are Ray actors that talk over TCP."""
        _one_of("backend", self.backend, ("local", "ray"))
        if self.backend != "ray":
            for name in ("ray_address", "node_cpus"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"--{_flag(name)} needs --backend ray")
            if self.node_gpus:
                raise ConfigError("--node-gpus needs --backend ray")
            if self.host is None:
                object.__setattr__(self, "host", "127.0.0.1")
            return
        refused = {"--in-process": self.in_process, "--listen": self.listen,
                   "--secure": self.secure or self.keys, "--transport ipc/inproc":
                   self.transport != "tcp"}
        for flag, given in refused.items():
            if given:
                why = (" (secret keys would travel through Ray's object store; run "
                       "`p2pfl node --connect --key` on each host)" if flag == "--secure" else "")
                raise ConfigError(f"--backend ray does not combine with {flag}: Ray places one "
                                  f"node process per actor, talking over TCP{why}")
        if self.host in ("0.0.0.0", "*"):  # nodes tell their peers the address they bind
            raise ConfigError(f"--host {self.host} with --backend ray: nodes on other hosts "
                              "cannot reach that address; leave --host out (each node binds "
                              "its host's IP)")
        if self.ray_address is not None and self.ray_address.startswith("ray://"):
            raise ConfigError(f"--ray-address {self.ray_address}: ray:// is Ray Client, which "
                              "the ray extra does not install; give the cluster's HOST:PORT "
                              "(its head's port, 6379 by default)")
        if self.ray_address is not None and not _ray_address(self.ray_address):
            raise ConfigError(f"--ray-address expects auto or HOST:PORT, "
                              f"got {self.ray_address!r}")
        # Ray's own floor is 0.0001 of a CPU or GPU (finer was Ray's traceback)
        if self.node_cpus is not None and not 1e-4 <= self.node_cpus < float("inf"):
            raise ConfigError(f"--node-cpus must be at least 0.0001 and finite, got "
                              f"{self.node_cpus}")
        if not (self.node_gpus == 0 or 1e-4 <= self.node_gpus < float("inf")):
            raise ConfigError(f"--node-gpus must be 0, or at least 0.0001 and finite, got "
                              f"{self.node_gpus}")
        # a node process reads its data where Ray started it: paths as the launcher sees them
        kind, sep, path = self.dataset.partition(":")
        if kind in ("npz", "mnist", "cifar10") and sep and path:
            object.__setattr__(self, "dataset", f"{kind}:{os.path.abspath(path)}")
        if self.data_dir:
            object.__setattr__(self, "data_dir", os.path.abspath(self.data_dir))
        from .ray_backend import require_ray

        require_ray()

    @property
    def exchange_only(self) -> bool:
        """``--local-steps 0`` (and no epochs): nodes exchange, never train or evaluate."""
        return self.local_steps == 0 and self.local_epochs == 0

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain-data view (msgpack/JSON/TOML-safe), for the wire and for the run folder."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Options that only some modes read.  Given another value than its default in any
#: other mode, one is a usage error rather than silently ignored.
MODE_OPTIONS = {
    "gamma": ("gossip",), "participation": SERVER_MODES, "stc_cache": ("stc",),
    "cfl_eps1": ("cfl",), "cfl_eps2": ("cfl",), "cfl_warmup": ("cfl",),
    "public_size": ("fd", "cfd"), "distill_steps": ("fd", "cfd"), "fd_bits": ("fd", "cfd"),
    "fd_delta": ("fd", "cfd"), "fd_coder": ("fd", "cfd"),
    "algorithm": ("gossip",), "schedule": ("gossip",), "mixing": ("gossip",),
    "compression_down": ("stc",), "error_feedback": ("gossip", "fedavg", "stc"),
    "consensus": ("gossip",),
}


def _check_mode_options(cfg) -> None:
    defaults = {f.name: f.default for f in fields(cfg)}
    for name, modes in MODE_OPTIONS.items():
        if cfg.mode not in modes and getattr(cfg, name) != defaults[name]:
            where = "gossip" if modes == ("gossip",) else "--mode " + "|".join(modes)
            flag = "no-" + _flag(name) if getattr(cfg, name) is False else _flag(name)
            raise ConfigError(f"--{flag} applies to {where}, not to "
                              f"{'gossip' if cfg.mode == 'gossip' else '--mode ' + cfg.mode}")


def _check_error_feedback(cfg) -> None:
    """``--error-feedback on|off`` needs a compressed exchange to act on: in gossip and
    FedAvg, a ``--compression`` (run-wide or in a profile); STC always compresses."""
    if cfg.error_feedback == "auto" or cfg.mode == "stc" or cfg.compression != "none":
        return
    if cfg.profiles and not cfg.node_overrides:
        return  # the profiles are not read yet; checked again once they are
    prof = cfg.node_overrides or {}
    tables = [prof.get("default", {}), *prof.get("nodes", {}).values()]
    if all(t.get("compression", "none") == "none" for t in tables):
        raise ConfigError("--error-feedback applies to compressed exchanges; this run has "
                          "no --compression (nor one in its profiles)")


def _ray_address(text: str) -> bool:
    """Whether ``text`` is an address ``ray.init`` takes: ``auto``, ``local``, a head's
    ``HOST:PORT``, or a client's ``ray://HOST:PORT`` (``foo`` was a traceback)."""
    if text in ("auto", "local"):
        return True
    host, sep, port = text.removeprefix("ray://").rpartition(":")
    return bool(sep and host.strip() and port.isdigit() and 0 < int(port) < 65536)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _one_of(name: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
