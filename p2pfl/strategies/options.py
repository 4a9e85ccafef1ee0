"""The options of each server strategy: small frozen dataclasses, resolved by the plan.

``from_config(cfg)`` resolves the mode-dependent "auto" values once; the
coordinator and every worker of a run receive the same, final options.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..compression import is_unbiased, without_temporal
from ..errors import ConfigError
from .robust import parse_aggregator, resolve

__all__ = ["FedAvgOptions", "STCOptions", "CFLOptions", "FDOptions", "FD_CODERS"]

#: Soft-label frame coders of FD and CFD (``strategies/softlabels.py``).  config.py
#: repeats them (it must not import the strategies); a test keeps the two equal.
FD_CODERS = ("packed", "cabac", "cabac:temporal")


def _fraction(value: float) -> float:
    if not 0 < value <= 1:
        raise ConfigError(f"participation must be in (0, 1], got {value}")
    return float(value)


@dataclass(frozen=True)
class FedAvgOptions:
    """``participation``: the reporting fraction of workers drawn each round;
    ``codec_up``: the workers' update codec (``--compression``; none: raw float32),
    with error feedback unless ``--error-feedback off`` (or ``auto`` with an unbiased
    codec: :func:`server_feedback`), and the filter scales of
    ``--filter-scaling on`` (:mod:`.upstream`).  The model goes down raw."""

    participation: float = 1.0
    aggregator: str = "mean"  # robust.parse_aggregator
    codec_up: str = "none"
    error_feedback_up: bool = True
    filter_scaling: bool = False

    def __post_init__(self) -> None:
        _fraction(self.participation)
        parse_aggregator(self.aggregator)
        if self.filter_scaling and self.codec_up == "none":
            raise ConfigError("--filter-scaling scales sparse updates: give fedavg a "
                              "--compression (e.g. topk:0.01+golomb)")

    @classmethod
    def from_config(cls, cfg) -> "FedAvgOptions":
        return cls(participation=cfg.participation, aggregator=resolve(cfg.aggregator, "mean"),
                   codec_up=cfg.compression,
                   error_feedback_up=server_feedback(cfg.error_feedback, cfg.compression),
                   filter_scaling=cfg.filter_scaling == "on")


def server_feedback(switch: str, spec: str) -> bool:
    """Error feedback for a server mode's codec ``spec`` under ``--error-feedback``:
    ``auto`` keeps it except for an unbiased codec (qsgd, terngrad, randk:P:scaled),
    whose residual grows: ``benchmarks/unbiased_feedback.py``, 10 FedAvg rounds of 4
    workers on digits with qsgd:4, reached 0.05-0.09 with it and 0.95-0.96 without.
    Raw float32 (``none``) loses nothing, so it has no residual to feed back."""
    if spec == "none" or switch == "off":
        return False
    return switch == "on" or not is_unbiased(spec)


@dataclass(frozen=True)
class STCOptions:
    """STC: codecs up and down (``--compression none`` means ``stc:0.01+golomb``;
    ``--compression-down auto`` the upstream spec), the update cache length and
    the error-feedback switch per direction (``--error-feedback off`` turns both
    off; ``on`` keeps both residuals, as the STC paper does, and ``auto`` too unless
    that direction's codec is unbiased: :func:`server_feedback`).
    ``cabac:temporal`` and ``powersgd:R:alternate`` apply upstream only: the
    automatic downstream spec drops them, since the server's updates are
    broadcast, cached and replaced by the full model for workers that missed
    too many."""

    participation: float = 1.0
    codec_up: str = "stc:0.01+golomb"
    codec_down: str = "stc:0.01+golomb"
    cache: int = 10
    error_feedback_up: bool = True
    error_feedback_down: bool = True
    aggregator: str = "mean"  # robust.parse_aggregator
    filter_scaling: bool = False  # a scale per conv filter with each update (filter_scaling.py)

    def __post_init__(self) -> None:
        _fraction(self.participation)
        parse_aggregator(self.aggregator)
        if self.cache < 0:
            raise ConfigError(f"stc_cache must be >= 0, got {self.cache}")

    @classmethod
    def from_config(cls, cfg) -> "STCOptions":
        up = "stc:0.01+golomb" if cfg.compression == "none" else cfg.compression
        down = without_temporal(up) if cfg.compression_down == "auto" else cfg.compression_down
        return cls(participation=cfg.participation, codec_up=up, codec_down=down,
                   cache=cfg.stc_cache,
                   error_feedback_up=server_feedback(cfg.error_feedback, up),
                   error_feedback_down=server_feedback(cfg.error_feedback, down),
                   aggregator=resolve(cfg.aggregator, "mean"),
                   filter_scaling=cfg.filter_scaling == "on")


@dataclass(frozen=True)
class CFLOptions:
    """CFL: split a cluster when its mean update norm is below ``eps1`` and its
    largest above ``eps2``, after ``warmup`` rounds of training; within a cluster,
    updates are combined by ``aggregator`` (default ``normclip``)."""

    participation: float = 1.0
    eps1: float = 0.6
    eps2: float = 1.2
    warmup: int = 10
    aggregator: str = "normclip"  # robust.parse_aggregator, without clip:TAU

    def __post_init__(self) -> None:
        _fraction(self.participation)
        if not (self.eps1 >= 0 and self.eps2 >= 0 and self.warmup >= 0):
            raise ConfigError("cfl_eps1, cfl_eps2 and cfl_warmup must be >= 0")
        if parse_aggregator(self.aggregator).name == "clip":
            raise ConfigError("cfl: centred clipping (clip:TAU) keeps one state per cluster "
                              "and is not supported; use normclip, median, trimmed or krum")

    @classmethod
    def from_config(cls, cfg) -> "CFLOptions":
        return cls(participation=cfg.participation, eps1=cfg.cfl_eps1, eps2=cfg.cfl_eps2,
                   warmup=cfg.cfl_warmup, aggregator=resolve(cfg.aggregator, "normclip"))


@dataclass(frozen=True)
class FDOptions:
    """FD and CFD: the public set's size, distillation steps, soft-label ``bits``
    (0: float32; fd 0, cfd 1 by default), delta coding (on for cfd) and the
    frames' ``coder`` (``strategies/softlabels.py``)."""

    participation: float = 1.0
    public_size: int = 200
    distill_steps: int = 5
    bits: int = 0
    delta: bool = False
    coder: str = "packed"

    def __post_init__(self) -> None:
        _fraction(self.participation)
        if not 0 <= self.bits <= 8:
            raise ConfigError(f"fd_bits must be in [0, 8] (0: float32), got {self.bits}")
        if self.coder not in FD_CODERS:
            raise ConfigError(f"--fd-coder must be one of {', '.join(FD_CODERS)}, got "
                              f"{self.coder!r}")
        if self.coder != "packed" and self.bits == 0:
            raise ConfigError(f"--fd-coder {self.coder} codes quantised soft labels; "
                              "set --fd-bits to 1..8 (0 sends float32)")
        if self.coder == "cabac:temporal" and not self.delta:
            raise ConfigError("--fd-coder cabac:temporal codes deltas against the previous "
                              "labels; it needs --fd-delta on")
        if self.public_size < 0 or self.distill_steps < 0:
            raise ConfigError("public_size and distill_steps must be >= 0")
        if self.bits == 0 and self.delta:
            object.__setattr__(self, "delta", False)  # delta coding needs levels

    @classmethod
    def from_config(cls, cfg) -> "FDOptions":
        cfd = cfg.mode == "cfd"
        bits = cfg.fd_bits if cfg.fd_bits is not None else (1 if cfd else 0)
        if cfd and bits == 0:  # it ran FD under CFD's name
            raise ConfigError("--mode cfd quantises the soft labels to 1..8 bits; --fd-bits 0 "
                              "sends them as float32, which is --mode fd")
        if cfg.fd_delta == "on" and bits == 0:  # auto: off there, as nothing is quantised
            raise ConfigError("--fd-delta on codes the changes of quantised soft labels; set "
                              "--fd-bits to 1..8 (0 sends float32)")
        delta = cfg.fd_delta == "on" or (cfg.fd_delta == "auto" and cfd)
        return cls(participation=cfg.participation, public_size=cfg.public_size,
                   distill_steps=cfg.distill_steps, bits=int(bits), delta=bool(delta),
                   coder=cfg.fd_coder)
