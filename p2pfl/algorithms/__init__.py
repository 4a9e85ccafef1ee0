"""Gossip algorithms as pure update rules over flat parameter vectors."""

from .base import GossipAlgorithm, Packet
from .choco import CHOCO
from .dpsgd import DPSGD, CompressedDPSGD

ALGORITHMS = {"dpsgd": DPSGD, "choco": CHOCO}

__all__ = ["ALGORITHMS", "GossipAlgorithm", "Packet", "DPSGD", "CompressedDPSGD", "CHOCO",
           "make_algorithm"]


def make_algorithm(name: str, numel: int, self_weight: float, weights: dict, *, x0,
                   options, seed: int | None = None) -> GossipAlgorithm:
    """Build a registered gossip algorithm; ``dpsgd`` with a codec compresses differences."""
    from ..errors import ConfigError

    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[name]
    if cls is DPSGD and options.codec != "none":
        cls = CompressedDPSGD
    return cls(numel, self_weight, weights, x0=x0, options=options, seed=seed)
