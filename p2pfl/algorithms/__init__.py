"""Gossip algorithms as pure update rules over flat parameter vectors."""

from .base import GossipAlgorithm, Packet
from .choco import CHOCO
from .deepsqueeze import DeepSqueeze
from .dpsgd import DPSGD, CompressedDPSGD
from .gossip_learning import GossipLearning

ALGORITHMS = {"dpsgd": DPSGD, "choco": CHOCO, "deepsqueeze": DeepSqueeze,
              "gossip-learning": GossipLearning}
#: Rules that only make sense without a round barrier.
ASYNC_ONLY = frozenset({"gossip-learning"})

__all__ = ["ALGORITHMS", "ASYNC_ONLY", "GossipAlgorithm", "Packet", "DPSGD", "CompressedDPSGD",
           "CHOCO", "DeepSqueeze", "GossipLearning", "make_algorithm"]


def make_algorithm(name: str, numel: int, self_weight: float, weights: dict, *, x0,
                   options, seed: int | None = None, shapes=None,
                   peer_codecs=None) -> GossipAlgorithm:
    """Build a registered gossip algorithm; ``dpsgd`` with a codec compresses differences."""
    from ..errors import ConfigError

    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[name]
    if cls is DPSGD and options.codec != "none":
        cls = CompressedDPSGD
    return cls(numel, self_weight, weights, x0=x0, options=options, seed=seed, shapes=shapes,
               peer_codecs=peer_codecs)
