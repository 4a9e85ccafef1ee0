"""The registry of node roles and of the rules each role runs.

A node's spec names its role (``gossip``, ``worker`` or ``coordinator``) and
its rule: a gossip algorithm for ``gossip``, a server strategy (mode) for the
other two.  This module is the one place that maps those names to classes.
"""

from __future__ import annotations

from .algorithms import ALGORITHMS
from .errors import ConfigError
from .node import GossipNode
from .server.coordinator import Coordinator
from .server.worker import Worker
from .spec import NodeSpec, node_spec_from_wire
from .strategies import STRATEGIES

__all__ = ["ROLES", "options_class", "node_spec", "make_role"]

#: role name -> role class; each is built as ``cls(runtime, spec)``.
ROLES = {"gossip": GossipNode, "worker": Worker, "coordinator": Coordinator}


def options_class(role: str, rule: str) -> type:
    """The options dataclass of ``rule`` in ``role``; ConfigError names the valid ones."""
    if role not in ROLES:
        raise ConfigError(f"unknown node role {role!r}; valid: {', '.join(ROLES)}")
    table = ALGORITHMS if role == "gossip" else STRATEGIES
    if rule not in table:
        what = "algorithm" if role == "gossip" else "mode"
        raise ConfigError(f"unknown {what} {rule!r}; valid: {', '.join(sorted(table))}")
    entry = table[rule]
    return entry.Options if role == "gossip" else entry.options


def node_spec(data: dict) -> NodeSpec:
    """A node spec from the launcher's ``config`` message, checked."""
    if not isinstance(data, dict):
        raise ConfigError("node spec: expected a map")
    return node_spec_from_wire(data, options_class(str(data.get("role")),
                                                   str(data.get("rule"))))


def make_role(runtime, spec: NodeSpec):
    """The role object of a node: it has ``run()``, ``final_report() -> dict`` and
    ``final_state() -> dict | None`` (its model's state, for ``--save-models``)."""
    return ROLES[spec.role](runtime, spec)
