"""p2pfl: a peer-to-peer gossip learning runtime over ZeroMQ."""

from .errors import (ClusterError, ConfigError, DataError, Terminated, TopologyError,
                     UsageError)
from .version import __version__

__all__ = ["run_cluster", "plan_cluster", "Result", "__version__", "ClusterError", "UsageError",
           "ConfigError", "TopologyError", "DataError", "Terminated"]


def __getattr__(name):  # keep `import p2pfl` light: torch loads on first use
    if name in ("run_cluster", "plan_cluster", "Result"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'p2pfl' has no attribute {name!r}")
