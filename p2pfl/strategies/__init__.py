"""Server-mode FL strategies: small classes with hooks around one shared round loop.

Built in: ``fedavg``, ``stc``, ``cfl``, ``fd`` and ``cfd`` (see each module's
docstring for its update rule and defaults).  A strategy is a server class
(:class:`Strategy`), a worker class (:class:`ClientStrategy`) and an options
dataclass (``options.py``); :data:`STRATEGIES` is the one table of them, and
the run modes are its keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .base import BEHAVIOURS, ClientStrategy, Reply, ServerContext, Strategy, weighted_mean
from .cfl import CFL
from .fd import FD, FDClient
from .fedavg import FedAvg, FedAvgClient
from .options import CFLOptions, FDOptions, FedAvgOptions, STCOptions
from .stc import STC, STCClient

__all__ = ["Strategy", "ClientStrategy", "Reply", "ServerContext", "STRATEGIES", "MODES",
           "StrategyEntry", "make_strategy", "make_client", "weighted_mean", "BEHAVIOURS"]


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: its server and worker classes and its options."""

    server: type
    client: type
    options: type


#: mode name -> strategy.  ``cfd`` is FD with quantised, delta-coded soft labels
#: (its options' defaults differ; ``FDOptions.from_config``).
STRATEGIES = {
    "fedavg": StrategyEntry(FedAvg, FedAvgClient, FedAvgOptions),
    "stc": StrategyEntry(STC, STCClient, STCOptions),
    "cfl": StrategyEntry(CFL, FedAvgClient, CFLOptions),
    "fd": StrategyEntry(FD, FDClient, FDOptions),
    "cfd": StrategyEntry(FD, FDClient, FDOptions),
}

#: The server modes, derived from the registry.
MODES = tuple(STRATEGIES)


def _lookup(mode: str) -> StrategyEntry:
    if mode not in STRATEGIES:
        raise ConfigError(f"unknown server mode {mode!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[mode]


def make_strategy(mode: str, ctx: ServerContext) -> Strategy:
    return _lookup(mode).server(ctx)


def make_client(mode: str, learner, options, learn) -> ClientStrategy:
    return _lookup(mode).client(learner, options, learn)
