"""Local SGD training, evaluation and distillation helpers.

A :class:`LocalTrainer` owns one node's data (as torch tensors, converted
once), its optimizer and its batch sampler.  Nothing here knows about the
network: the runtime calls :meth:`LocalTrainer.train` between exchanges and
swaps parameters with :func:`p2pfl.models.assign_params`, which writes in
place, so the optimizer keeps tracking the same tensors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from p2pfl.errors import ConfigError, DataError

__all__ = ["SGDConfig", "LocalTrainer", "QuasiGlobalMomentum", "MOMENTUM_MODES", "evaluate",
           "soft_labels"]


@dataclass(frozen=True)
class SGDConfig:
    """Local optimiser settings.

    Attributes
    ----------
    lr : float
        Learning rate (> 0).
    momentum : float
        SGD momentum in ``[0, 1)``; the buffer persists across rounds.
    weight_decay : float
        L2 penalty (>= 0).
    batch_size : int
        Mini-batch size (>= 1).
    local_steps : int
        Optimiser steps per :meth:`LocalTrainer.train` call.
    local_epochs : int
        If > 0, overrides ``local_steps``: passes over the node's data.
    momentum_mode : str
        ``"local"``: the momentum buffer is the node's own, persisting across
        rounds.  ``"quasi-global"``: between :meth:`LocalTrainer.train` calls
        it is rebuilt from how the parameters actually moved, gossip included
        (:class:`QuasiGlobalMomentum`).
    """

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    local_steps: int = 10
    local_epochs: int = 0
    momentum_mode: str = "local"

    def __post_init__(self):
        checks = [("lr", self.lr > 0 and math.isfinite(self.lr), "> 0"),
                  ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("momentum_mode", self.momentum_mode in MOMENTUM_MODES,
                   " or ".join(MOMENTUM_MODES)),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("local_steps", self.local_steps >= 0, ">= 0"),
                  ("local_epochs", self.local_epochs >= 0, ">= 0")]
        for field, ok, valid in checks:
            if not ok:
                raise ConfigError(f"bad {field} {getattr(self, field)!r}; "
                                  f"expected {valid}")


MOMENTUM_MODES = ("local", "quasi-global")


class QuasiGlobalMomentum:
    """Quasi-global momentum: the buffer follows the model's actual motion, gossip included.

    QG-DSGDm (Lin, Karimireddy, Stich, Jaggi, "Quasi-Global Momentum", ICML 2021),
    at node i::

        m_i = β m̂_i + g_i;   x_i ← x_i − η m_i;   x_i ← gossip(x_i)
        d_i = (x_i^prev − x_i) / η;   m̂_i ← μ m̂_i + (1 − μ) d_i

    A local buffer (``momentum_mode="local"``) accumulates the node's own
    gradients, so on heterogeneous data it keeps pushing towards the node's
    own optimum at 1/(1 − β) times the step, right after each consensus step
    pulled the node back.  m̂ instead averages the node's real displacement,
    in which the consensus step has cancelled that local bias.

    A round here is K local steps then one gossip step, so d_i is the round's
    displacement per step, d = (x_start − x_now)/(η K), and μ = β^K per round
    (μ = β per step, the paper's choice).  m̂ starts at 0; it is divided by
    the sum of its weights, Σ μ^t (1 − μ) (the bias correction of Adam,
    Kingma & Ba 2015), so early rounds are not damped by that zero start.
    Every motion between two :meth:`LocalTrainer.train` calls counts as
    gossip, so it is meant for the gossip loop (not for distillation steps).
    """

    def __init__(self) -> None:
        self.start = None  # flat parameters when the last round's local steps began
        self.steps, self.lr = 0, 0.0  # that round's step count and learning rate
        self.avg = None  # m̂, the exponential average of d (zero-started)
        self.weight = 0.0  # the sum of the weights in ``avg``

    def begin_round(self, params: list, beta: float, steps: int, lr: float):
        """m̂ updated with the motion since the last round began; None in the first round."""
        x = torch.cat([p.detach().reshape(-1) for p in params])
        buffer = None
        if self.start is not None and self.steps:
            mu = beta ** self.steps
            d = (self.start - x) / (self.lr * self.steps)
            self.avg = d.mul_(1 - mu) if self.avg is None else self.avg.mul_(mu).add_(
                d, alpha=1 - mu)
            self.weight = mu * self.weight + (1 - mu)
            buffer = self.avg / self.weight
        self.start, self.steps, self.lr = x, steps, lr
        return buffer


def _as_x(x) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.float()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_y(y) -> torch.Tensor:
    if torch.is_tensor(y):
        return y.long()
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


class _BatchStream:
    """Endless mini-batches: a fresh permutation per epoch, no repeats within one.

    The last batch of an epoch may be smaller than ``batch_size``.
    """

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self._perm = np.empty(0, dtype=np.int64)
        self._pos = 0

    def steps_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def next(self) -> torch.Tensor:
        if self._pos >= len(self._perm):
            self._perm, self._pos = self.rng.permutation(self.n), 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += len(idx)
        return torch.from_numpy(idx)


class SGD:
    """Mini-batch SGD with heavy-ball momentum μ and L2 weight decay λ:

        g ← ∇f(w) + λ·w,   b ← g (first step) or μ·b + g,   w ← w − η·b

    the update of ``torch.optim.SGD`` (no dampening, no Nesterov), computed the
    same way tensor by tensor, so that runs are bit for bit those of torch's.
    It is ours because the first use of ``torch.optim`` imports
    ``torch._dynamo``, about 2 s of every run's start-up.  ``state[p]
    ["momentum_buffer"]`` and ``param_groups[0]["lr"]`` read and write as in torch.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.param_groups = [{"lr": float(lr)}]
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.state: dict = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr, mu, wd = self.param_groups[0]["lr"], self.momentum, self.weight_decay
        for p in self.params:
            if p.grad is None:
                continue
            g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            if mu != 0:
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(mu).add_(g, alpha=1.0)
                g = buf
            p.add_(g, alpha=-lr)


class LocalTrainer:
    """Trains one node's model on its local data.

    Parameters
    ----------
    model : torch.nn.Module
        The node's model; trained in place.
    x, y : numpy.ndarray
        Local features ``(N, ...)`` and integer labels ``(N,)``, ``N >= 1``.
    cfg : SGDConfig
        Optimiser settings.
    seed : int
        Seed of this trainer's batch sampling.
    """

    def __init__(self, model: nn.Module, x, y, cfg: SGDConfig, seed: int):
        self.model, self.cfg = model, cfg
        self.device = _device_of(model)  # the local data lives where the model does
        self.x, self.y = _as_x(x).to(self.device), _as_y(y).to(self.device)
        if len(self.x) == 0 or len(self.x) != len(self.y):
            raise DataError(f"local data needs N >= 1 samples with one label "
                            f"each, got {len(self.x)} and {len(self.y)}")
        self.rng = np.random.default_rng(seed)
        self._batches = _BatchStream(len(self.x), cfg.batch_size, self.rng)
        self.optimizer = self._make_optimizer()
        self._quasi_global = QuasiGlobalMomentum()

    @property
    def num_samples(self) -> int:
        """Number of local training samples."""
        return len(self.x)

    def _make_optimizer(self) -> "SGD":
        return SGD(self.model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                   weight_decay=self.cfg.weight_decay)

    def reset_optimizer(self) -> None:
        """Drop the momentum buffers (e.g. after a large model change)."""
        self.optimizer = self._make_optimizer()
        self._quasi_global = QuasiGlobalMomentum()

    def _load_quasi_global(self) -> None:
        """Set the optimizer's momentum buffers to the quasi-global m̂ (before a round)."""
        params = list(self.model.parameters())
        lr = self.optimizer.param_groups[0]["lr"]
        buffer = self._quasi_global.begin_round(params, self.cfg.momentum, self.num_steps(), lr)
        if buffer is None:
            return
        for p, b in zip(params, torch.split(buffer, [p.numel() for p in params])):
            self.optimizer.state[p]["momentum_buffer"] = b.view_as(p).clone()

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of the live optimizer (for schedules)."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def num_steps(self) -> int:
        """Optimiser steps one :meth:`train` call takes."""
        if self.cfg.local_epochs > 0:
            return self.cfg.local_epochs * self._batches.steps_per_epoch()
        return self.cfg.local_steps

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def train(self) -> float:
        """Run the configured local steps; return the mean training loss.

        Returns ``nan`` when zero steps are configured.
        """
        self.model.train()
        steps = self.num_steps()
        if self.cfg.momentum_mode == "quasi-global" and self.cfg.momentum > 0:
            self._load_quasi_global()
        total = torch.zeros((), device=self.device)
        for _ in range(steps):
            idx = self._batches.next()
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self._step(loss)
            total += loss.detach()
        return float(total) / steps if steps else float("nan")

    def train_channel_scales(self, which: list, steps: int, lr: float) -> list:
        """Filter-wise scaling (ALGORITHMS.md; Becking et al. 2022): one scale per
        output channel of each parameter in ``which`` (indices into
        ``model.parameters()``), initialised to 1, effective weight s ⊙ W, trained
        by ``steps`` plain SGD steps of rate ``lr`` on local batches while the
        weights (and BatchNorm statistics: eval mode) stay frozen.  Returns the
        scales, one float32 vector per parameter."""
        from torch.func import functional_call

        named = list(self.model.named_parameters())
        scales = [torch.ones(named[i][1].shape[0], device=self.device, requires_grad=True)
                  for i in which]
        self.model.eval()
        for _ in range(steps):
            idx = self._batches.next()
            weights = {named[i][0]: s.view(-1, *[1] * (named[i][1].dim() - 1))
                       * named[i][1].detach() for i, s in zip(which, scales)}
            loss = F.cross_entropy(functional_call(self.model, weights, (self.x[idx],)),
                                   self.y[idx])
            grads = torch.autograd.grad(loss, scales)
            with torch.no_grad():
                for s, g in zip(scales, grads):
                    s.sub_(g, alpha=lr)
        self.model.train()
        return [s.detach() for s in scales]

    def distill(self, x_pub, targets_probs, steps: int, *,
                temperature: float = 1.0) -> float:
        """Train towards soft labels on public data (federated distillation).

        Minimises the soft cross-entropy between ``targets_probs`` and the
        model's tempered softmax, scaled by ``temperature**2`` so gradients
        keep their size.  Uses the same optimizer as :meth:`train`.

        Parameters
        ----------
        x_pub : numpy.ndarray
            Public (unlabelled) inputs ``(M, ...)``.
        targets_probs : numpy.ndarray
            Target probabilities ``(M, C)``, rows summing to one.
        steps : int
            Optimiser steps, with batches of ``cfg.batch_size``.
        temperature : float
            Softmax temperature applied to the model's logits.

        Returns
        -------
        float
            Mean KL divergence (targets || model) over the steps.
        """
        x, t = _as_x(x_pub).to(self.device), _as_x(targets_probs).to(self.device)
        if len(x) == 0 or t.shape[0] != len(x):
            raise DataError(f"distillation needs M >= 1 inputs with one target "
                            f"row each, got {len(x)} and {t.shape[0]}")
        stream = _BatchStream(len(x), self.cfg.batch_size, self.rng)
        entropy = torch.special.xlogy(t, t).sum(1)
        self.model.train()
        total = torch.zeros((), device=self.device)
        for _ in range(steps):
            idx = stream.next()
            logp = F.log_softmax(self.model(x[idx]) / temperature, dim=1)
            kl = (entropy[idx] - (t[idx] * logp).sum(1)).mean()
            self._step(kl * temperature ** 2)
            total += kl.detach()
        return float(total) / steps if steps else float("nan")


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int):
    """Yield ``(start, logits)`` per batch (on the model's device), in eval mode
    without grad."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                yield start, model(x[start:start + batch_size].to(device))
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, x, y, batch_size: int = 2048
             ) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``.

    Runs in eval mode under ``torch.no_grad`` and restores the previous
    mode.  Returns ``(nan, nan)`` for an empty set.
    """
    device = _device_of(model)
    x, y = _as_x(x), _as_y(y).to(device)
    if len(x) == 0:
        return float("nan"), float("nan")
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = 0
    for start, logits in _batched_logits(model, x, batch_size):
        yb = y[start:start + len(logits)]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += int((logits.argmax(1) == yb).sum())
    return float(loss_sum) / len(x), correct / len(x)


def soft_labels(model: nn.Module, x, *, temperature: float = 1.0,
                batch_size: int = 2048) -> np.ndarray:
    """Softmax probabilities ``(N, C)`` (float32) of ``model`` on ``x``."""
    x = _as_x(x)
    chunks = [F.softmax(logits / temperature, dim=1)
              for _, logits in _batched_logits(model, x, batch_size)]
    if not chunks:
        raise DataError("soft_labels needs at least one input")
    return torch.cat(chunks).cpu().numpy().astype(np.float32)
