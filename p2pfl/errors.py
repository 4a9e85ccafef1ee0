"""Error types shared across p2pfl.

``UsageError`` is what a user can fix: a bad flag, an unreadable file, a
disconnected graph.  The CLI turns it into a one-line message and exit code 2.
"""

__all__ = ["UsageError", "TopologyError", "DataError", "ConfigError", "ClusterError",
           "Diverged", "Terminated"]


class UsageError(ValueError):
    """A problem with the user's input; reported as one line, exit code 2."""


class TopologyError(UsageError):
    """A graph or topology spec that cannot be used."""


class DataError(UsageError):
    """An unknown dataset, an unreadable data file or a bad partition spec."""


class ConfigError(UsageError):
    """An unknown or invalid configuration option."""


class ClusterError(RuntimeError):
    """The cluster could not start, lost contact with its nodes, or every node failed
    (a runtime failure, not a usage error: exit code 1).  ``result``: the run's
    :class:`~p2pfl.result.Result` when it got that far, else None."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result


class Diverged(RuntimeError):
    """A node's own local training left its parameters non-finite (a learning rate too
    high, say): the node fails with this as its reason, in every mode and with every
    codec, before anything non-finite is sent."""

    REASON = "diverged: the model is not finite after local training (a lower --lr?)"

    def __init__(self) -> None:
        super().__init__(self.REASON)


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwinds like Ctrl-C, through the launcher's clean shutdown."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
