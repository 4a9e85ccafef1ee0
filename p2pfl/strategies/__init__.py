"""Server-mode FL strategies: small classes with hooks around one shared round loop.

Built in: ``fedavg``, ``stc``, ``cfl``, ``fd`` and ``cfd`` (see each module's
docstring for its update rule and defaults).  A new strategy subclasses
:class:`Strategy` (server) and :class:`ClientStrategy` (worker) and calls
:func:`register`.
"""

from .base import (BEHAVIOURS, STRATEGIES, ClientStrategy, Reply, ServerContext, Strategy,
                   make_client, make_strategy, register, weighted_mean)

__all__ = ["Strategy", "ClientStrategy", "Reply", "ServerContext", "STRATEGIES", "register",
           "make_strategy", "make_client", "weighted_mean", "BEHAVIOURS"]
