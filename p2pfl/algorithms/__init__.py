"""Gossip algorithms as pure update rules over flat parameter vectors."""

from .base import GossipAlgorithm, Packet
from .dpsgd import DPSGD

ALGORITHMS = {"dpsgd": DPSGD}

__all__ = ["ALGORITHMS", "GossipAlgorithm", "Packet", "DPSGD", "make_algorithm"]


def make_algorithm(name: str, **kwargs) -> GossipAlgorithm:
    """Build a registered gossip algorithm by name."""
    from ..errors import ConfigError

    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name](**kwargs)
