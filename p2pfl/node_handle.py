"""The launcher's handle on one node (:class:`NodeHandle`), and how a node's process
ended, in words (:func:`ended`)."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

__all__ = ["NodeHandle", "ended"]


@dataclass
class NodeHandle:
    """The launcher's view of one node: where it is, what state it is in, how it ended."""

    id: int
    label: object
    runner: object = None  # multiprocessing.Process or threading.Thread
    address: str | None = None
    control: str | None = None
    local: str | None = None  # inproc address for actors of the same host process
    ray_node: str | None = None  # the Ray node it was placed on (--backend ray)
    pid: int | None = None
    host: str | None = None
    route: bytes = b""  # the routing id of the process taken for it (admission.py)
    state: str = "spawned"  # spawned, joined, ready, restarting; done, failed, stopped
    final: dict = field(default_factory=dict)
    reason: str | None = None
    done_at: float | None = None  # when the launcher saw it done (closer only)
    restarts: int = 0  # how often it was restarted after dying
    last_round: int = 0  # the latest round it sent a record of
    offline: bool = False  # its latest record says it went offline (silent, by design)
    restarted_at: float = 0.0  # when the launcher last started a new process for it
    stopped_since: float | None = None  # when its process was first seen stopped
    saved_route: bytes | None = None  # the process whose final model is saved

    def exited(self) -> bool:
        r = self.runner
        return r is not None and (not r.is_alive())

    def said_bye(self, final: dict) -> bool:
        """Its bye came, with its final counters: it is done, unless the run has failed
        it already (a remote node whose connection was lost, back after its peers were
        told it is gone), which stays failed with its counters kept.  True if done."""
        self.final = final
        if self.state != "failed":
            self.state = "done"
        return self.state == "done"


def ended(runner) -> str:
    """How a node's process ended mid-run, in words: the signal that killed it, if one
    did (SIGKILL: the OOM killer, or kill -9), else its exit code."""
    code = getattr(runner, "exitcode", None)
    if isinstance(code, int) and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} before it finished"
    return "exited without finishing" + (f" (exit code {code})" if code else "")
