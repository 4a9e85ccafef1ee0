"""A node's learning state: its data shard, model, local trainer and test set.

The learner knows nothing of sockets or peers.  The node loop asks it to
train, to evaluate, and to read or replace its parameters as one flat vector.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref

import numpy as np
import torch

from .data import (Dataset, apply_label_permutation, group_label_permutations, load_dataset,
                   partition, partition_groups)
from .errors import Diverged
from .models import build_model, flat_parameters, view_parameters
from .spec import LearnSpec
from .training import LocalTrainer, SGDConfig, evaluate

__all__ = ["Learner", "shared_dataset", "shard_indices", "warm_up", "public_indices",
           "test_set", "build_run_model", "cuda_available", "resolve_device"]


def cuda_available() -> bool:
    """Whether torch sees a GPU, asked through NVML so that the launcher may still
    fork node processes afterwards (a CUDA context does not survive a fork)."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    return torch.cuda.is_available()


def resolve_device(name: str, node_id: int = 0) -> torch.device:
    """Where a node trains: ``auto`` is a GPU when this host has one, else the CPU;
    ``auto`` and ``cuda`` spread nodes over the visible GPUs by node id, so several
    nodes share each one.

    Raises
    ------
    RuntimeError
        For ``cuda`` or ``cuda:N`` on a host without that GPU.
    """
    if name == "cpu" or (name == "auto" and not cuda_available()):
        return torch.device("cpu")
    if not cuda_available():
        raise RuntimeError(f"device {name!r}: torch sees no CUDA GPU on this host")
    count = torch.cuda.device_count()
    index = int(name[5:]) if name.startswith("cuda:") else node_id % count
    if index >= count:
        raise RuntimeError(f"device {name!r}: this host has {count} GPU(s)")
    return torch.device("cuda", index)


def warm_up() -> None:
    """Pay torch's one-time lazy costs once, in the launcher, before it forks the
    nodes: one forward and backward pass of a tiny model (autograd's first use).
    ``torch.optim`` is not used at all (:class:`~p2pfl.training.SGD`)."""
    w = torch.zeros(2, requires_grad=True)
    (w * 2.0).sum().backward()


@functools.lru_cache(maxsize=4)
def shared_dataset(name: str, seed: int, data_dir: str | None) -> Dataset:
    """Load a dataset once per process (nodes hosted together share it)."""
    return load_dataset(name, seed=seed, data_dir=data_dir)


@functools.lru_cache(maxsize=8)
def _partition(name: str, seed: int, data_dir, num_nodes: int, spec: str, shares: tuple) -> tuple:
    ds = shared_dataset(name, seed, data_dir)
    spec_for_split = "iid" if spec.startswith("groups:") else spec
    return tuple(partition(ds.y_train, num_nodes, spec_for_split, seed=seed,
                           shares=list(shares) if shares else None))


def shard_indices(learn: LearnSpec, node_id: int) -> np.ndarray:
    """This node's training indices under the run's partition spec."""
    parts = _partition(learn.dataset, learn.seed, learn.data_dir, learn.num_nodes,
                       learn.partition, tuple(learn.shares))
    return parts[node_id]


def public_indices(learn: LearnSpec, size: int) -> np.ndarray:
    """Sorted training indices of the public (unlabelled) distillation set.

    ``size`` samples drawn with the run's seed from the training set; federated
    distillation holds them out of every shard (see :meth:`Learner.drop_samples`).
    Empty when the size is 0.
    """
    ds = _data(learn)
    if size <= 0:
        return np.empty(0, dtype=np.int64)
    size = min(size, len(ds.y_train) // 2)
    rng = np.random.default_rng(learn.seed + 104729)
    return np.sort(rng.choice(len(ds.y_train), size, replace=False)).astype(np.int64)


def _data(learn: LearnSpec) -> Dataset:
    return shared_dataset(learn.dataset, learn.seed, learn.data_dir)


def test_set(learn: LearnSpec, group: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The shared test set, labels permuted as group ``group`` sees them under ``groups:K``."""
    ds = _data(learn)
    y = ds.y_test
    if learn.partition.startswith("groups:") and group:
        k = int(learn.partition.split(":", 1)[1])
        y = apply_label_permutation(y, group_label_permutations(ds.num_classes, k,
                                                                learn.seed)[group])
    return ds.x_test, y


_DEVICE_COPIES: dict = {}  # (id(array), device): (weak reference to array, tensor)
_DEVICE_LOCK = threading.Lock()


def on_device(array: np.ndarray, device) -> torch.Tensor:
    """``array`` as a read-only tensor on ``device``, one copy a device for all the nodes
    of this process: on the CPU the array's own memory, elsewhere a copy made once
    (nodes sharing a GPU share the test set, not one copy a node)."""
    array = np.ascontiguousarray(array)
    if torch.device(device).type == "cpu":
        return torch.from_numpy(array)
    key = (id(array), str(device))
    with _DEVICE_LOCK:
        hit = _DEVICE_COPIES.get(key)
        if hit is not None and hit[0]() is array:
            return hit[1]
        for k in [k for k, (ref, _) in _DEVICE_COPIES.items() if ref() is None]:
            del _DEVICE_COPIES[k]  # arrays gone: their copies go too
        tensor = torch.from_numpy(array).to(device)
        _DEVICE_COPIES[key] = (weakref.ref(array), tensor)
        return tensor


def build_run_model(learn: LearnSpec):
    """The run's initial model, exactly as every node builds it (same seed)."""
    ds = _data(learn)
    return build_model(learn.model, ds.input_shape, ds.num_classes, seed=learn.seed)


class Learner:
    """Model, data shard and optimizer of one node.

    Parameters
    ----------
    learn : LearnSpec
        The node's resolved data, model and local SGD options.
    node_id : int
        The node's id, which selects its shard.
    pause : callable, optional
        ``pause(seconds)`` idles an emulated slow device (``slowdown``); the node
        passes one that lets the other actors of its host compute meanwhile.
    run : callable, optional
        ``run(fn)`` calls ``fn()`` for training and evaluation: actors of one
        host run them on the host's compute thread (:mod:`~p2pfl.transport.cpugate`).
    """

    def __init__(self, learn: LearnSpec, node_id: int, pause=time.sleep,
                 run=lambda fn: fn()) -> None:
        torch.set_num_threads(1)
        self.pause, self.run = pause, run
        self.spec = learn
        self._node_id = node_id
        ds = _data(learn)
        self.dataset = ds
        idx = shard_indices(learn, node_id)
        x, y = ds.x_train[idx], ds.y_train[idx]
        self.group = 0
        self.x_test, self.y_test = ds.x_test, ds.y_test
        if learn.partition.startswith("groups:"):
            k = int(learn.partition.split(":", 1)[1])
            perms = group_label_permutations(ds.num_classes, k, learn.seed)
            self.group = int(partition_groups(learn.num_nodes, k)[node_id])
            y = apply_label_permutation(y, perms[self.group])
            self.y_test = apply_label_permutation(ds.y_test, perms[self.group])
        self.num_samples = len(idx)
        # Every node builds its model from the run's seed, so all start equal.
        self.device = resolve_device(learn.device, node_id)
        self._model = build_run_model(learn).to(self.device)
        self._flat = flat_parameters(self._model)  # the parameters are views of it
        self._params = list(self._model.parameters())  # re-pointed after adopt()
        self._stale_views = False  # adopted, not yet re-pointed (exchange-only runs)
        # the exchange codes each parameter tensor on its own (compression/tensorwise.py)
        self.shapes = tuple(tuple(p.shape) for p in self._params)
        cfg = SGDConfig(lr=learn.lr, momentum=learn.momentum, weight_decay=learn.weight_decay,
                        batch_size=learn.batch_size, local_steps=learn.local_steps,
                        local_epochs=learn.local_epochs, momentum_mode=learn.momentum_mode)
        self._trainer = LocalTrainer(self._model, x, y, cfg, seed=learn.seed * 7919 + node_id)
        self._x_test = on_device(self.x_test, self.device)
        self._y_test = on_device(self.y_test, self.device)

    @property
    def model(self):
        """The node's model, its parameters views of the flat vector."""
        self._views()
        return self._model

    @property
    def trainer(self):
        """The local SGD trainer of :attr:`model`."""
        self._views()
        return self._trainer

    def _views(self) -> None:
        if self._stale_views:
            view_parameters(self._params, self._flat)
            self._stale_views = False

    @property
    def exchange_only(self) -> bool:
        """No local training (``--local-steps 0``): the rounds only exchange and mix."""
        return self.spec.local_steps == 0 and self.spec.local_epochs == 0

    def drop_samples(self, indices: np.ndarray) -> None:
        """Remove training-set ``indices`` (e.g. the public set) from this node's shard.

        The trainer is rebuilt on what remains (at least one sample is kept).
        """
        idx = shard_indices(self.spec, self._node_id)
        keep = ~np.isin(idx, indices)
        if not keep.any():
            keep[0] = True
        cfg, t = self.trainer.cfg, self.trainer
        keep = torch.from_numpy(keep).to(self.device)
        self._trainer = LocalTrainer(self.model, t.x[keep].cpu().numpy(),
                                    t.y[keep].cpu().numpy(), cfg,
                                    seed=self.spec.seed * 7919 + self._node_id)
        self.num_samples = int(keep.sum())

    def train(self) -> float:
        """Run the configured local SGD steps; return the mean training loss.

        With ``slowdown`` F > 1 (an emulated slow device) the node then idles
        for F − 1 times what the work took.
        """
        if self.exchange_only:
            return float("nan")  # exchange only (--local-steps 0)
        return self._finite(self._slowed(self.trainer.train))

    def distill(self, x_pub, targets, steps: int) -> float:
        """Distil towards soft labels on public inputs (federated distillation), local
        work slowed as :meth:`train` is (it was not: FD's distillation ran at full speed
        on a ``slowdown`` node)."""
        return self._finite(self._slowed(lambda: self.trainer.distill(x_pub, targets, steps)))

    def _finite(self, loss: float) -> float:
        """``loss``, once the parameters are checked finite after local work (one pass).

        Raises
        ------
        Diverged
            If they are not: the node fails with that reason, in every mode and with
            every codec (a codec refused the model, uncompressed gossip sent it to be
            dropped, a server counted it undecodable: each run ended differently)."""
        if not bool(torch.isfinite(self._flat).all()):
            raise Diverged()
        return loss

    def _slowed(self, fn):
        """``fn()`` as local work: then idle ``slowdown`` − 1 times what it took."""
        t0 = time.monotonic()
        result = self.run(fn)
        if self.spec.slowdown > 1:
            self.pause((self.spec.slowdown - 1) * (time.monotonic() - t0))
        return result

    def train_scales(self, which: list, steps: int, lr: float) -> list:
        """Per-channel scales of the parameters ``which``, trained with the weights
        frozen (:meth:`~p2pfl.training.LocalTrainer.train_channel_scales`); local work,
        slowed as :meth:`train` is."""
        return self._slowed(lambda: self.trainer.train_channel_scales(which, steps, lr))

    def flip_labels(self) -> None:
        """Train on flipped labels c → C − 1 − c (the ``label_flip`` behaviour)."""
        self.trainer.y = int(self.dataset.num_classes) - 1 - self.trainer.y

    def evaluate(self) -> tuple[float, float]:
        """(loss, accuracy) on the shared held-out test set."""
        return self.run(lambda: evaluate(self.model, self._x_test, self._y_test))

    def get_flat(self) -> torch.Tensor:
        """A copy of the parameters as one flat CPU vector (one copy, from a GPU too)."""
        if self._flat.is_cuda:
            return self._flat.cpu()
        return self._flat.clone()

    @property
    def params(self) -> torch.Tensor:
        """The parameters as one flat CPU vector: on the CPU the live buffer itself
        (no copy; read it, never write it), from a GPU a copy."""
        return self._flat.cpu()

    def adopt(self, flat: torch.Tensor) -> None:
        """Make ``flat`` the parameters' storage, without copying it, where it can
        be (a contiguous float32 tensor of the right size on the model's device);
        otherwise copy it in, like :meth:`set_flat`.  The caller gives ``flat`` up:
        nothing else may hold it.  The old buffer is left as it was, so messages
        still being sent from it stay intact.  The parameter tensors are re-pointed
        at ``flat`` now, which frees the old buffer once it is sent; in exchange-only
        runs (``--local-steps 0``), which never train, at the model's next use
        (:attr:`model`, :attr:`trainer`) instead, which rounds skip."""
        if not (torch.is_tensor(flat) and flat.dtype == self._flat.dtype
                and flat.device == self._flat.device and flat.is_contiguous()
                and flat.dim() == 1 and flat.numel() == self._flat.numel()):
            self.set_flat(flat)
            return
        self._flat = flat
        self._stale_views = True
        if not self.exchange_only:
            self._views()

    def set_flat(self, flat) -> None:
        """Replace the parameters, in place (onto a GPU: one copy).

        Raises
        ------
        ValueError
            If ``flat`` does not have exactly :attr:`num_params` elements.
        """
        flat = torch.as_tensor(flat).reshape(-1)
        if flat.numel() != self._flat.numel():
            raise ValueError(f"flat parameter vector has {flat.numel()} "
                             f"elements, model has {self._flat.numel()}")
        with torch.no_grad():
            self._flat.copy_(flat)

    @property
    def num_params(self) -> int:
        return self._flat.numel()
