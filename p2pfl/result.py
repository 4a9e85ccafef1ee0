"""What a run produced (:class:`Result`), as :func:`p2pfl.run_cluster` returns it: its
summary, its records read from the run folder when first asked for, and the final models
a run with ``save_models=True`` saved."""

from __future__ import annotations

import contextlib
import json
import numbers
import os
from dataclasses import dataclass, field

from .config import RunConfig
from .errors import UsageError
from .metrics import read_metrics
from .model_files import load_state, model_path

__all__ = ["Result"]


@dataclass
class Result:
    """What a run produced: ``summary`` (the dict in summary.json), ``metrics``
    (the per-node, per-round records), ``out_dir`` and ``config`` (the run's resolved
    :class:`~p2pfl.config.RunConfig`).

    ``metrics`` is read from ``out_dir/metrics.jsonl`` when first asked for: the
    launcher does not hold a run's records in memory, which a long run's would fill.
    """

    summary: dict
    out_dir: str
    config: RunConfig | None = field(default=None, repr=False, compare=False)
    _metrics: list | None = field(default=None, repr=False, compare=False)

    @property
    def metrics(self) -> list:
        if self._metrics is None:
            self._metrics = read_metrics(os.path.join(self.out_dir, "metrics.jsonl"))
        return self._metrics

    def model(self, node: int = 0, module=None):
        """Node ``node``'s final model, saved by a run with ``save_models=True``, as a
        ``torch.nn.Module`` in eval mode: the node's model (``nodes.json``) built anew
        with the saved state, or the state loaded into ``module`` (needed when it was a
        module of the caller's, which no file describes)."""
        if isinstance(node, bool) or not isinstance(node, numbers.Integral):
            raise UsageError(f"node is a node's id, an integer (the records' 'node'), got "
                             f"{node!r}{_label_of(self.out_dir, node)}")
        path = model_path(self.out_dir, node)
        if not os.path.exists(path):
            saved = self.summary.get("models_saved")
            why = ("it is the coordinator, which saves none: every worker's file holds the "
                   "model it ended with" if node == self.summary.get("workers") else
                   "runs save them with save_models=True" if saved is None else
                   f"{saved} were saved; a node's output says why it saved none")
            raise UsageError(f"no saved model of node {node} in {self.out_dir} ({why})")
        if module is None:
            module = _build_node_model(self.out_dir, node)
        module.load_state_dict(load_state(path))
        return module.eval()


def _label_of(out_dir: str, label) -> str:
    """``; label 'b' is node 1`` where ``label`` is a node's label in ``nodes.json``."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        with open(os.path.join(out_dir, "nodes.json")) as fh:
            ids = [n["id"] for n in json.load(fh) if n.get("label") == label]
        if ids:
            return f"; label {label!r} is node {ids[0]}"
    return ""


def _build_node_model(out_dir: str, node: int):
    """Node ``node``'s model as the run built it (its name in ``nodes.json``)."""
    from .data import load_dataset
    from .models import build_model

    with open(os.path.join(out_dir, "config.json")) as fh:
        cfg = json.load(fh)
    with open(os.path.join(out_dir, "nodes.json")) as fh:
        name = next((n.get("model") for n in json.load(fh) if n["id"] == node), None)
    name = name or cfg["model"]
    if str(name).startswith("custom:"):
        raise UsageError(f"node {node}'s model was a module of yours: pass it as module=")
    ds = load_dataset(cfg["dataset"], seed=cfg["seed"], data_dir=cfg["data_dir"])
    return build_model(name, ds.input_shape, ds.num_classes)
