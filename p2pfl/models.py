"""Small PyTorch models and flat-parameter helpers.

Models hold parameters only, no buffers (no BatchNorm): the whole model
state is :func:`flatten_params`, which is what nodes exchange and average.
Building with the same name, shapes and seed gives identical weights on
every node, without touching the global torch RNG.
"""

from __future__ import annotations

import copy
import functools
import itertools
import threading

import math

import numpy as np
import torch
from torch import nn

from p2pfl.errors import ConfigError

__all__ = [
    "MODELS",
    "register_module",
    "build_model",
    "flatten_params",
    "assign_params",
    "num_params",
    "param_shapes",
]

#: Model names accepted by :func:`build_model`.
MODELS = ("logreg", "mlp", "cnn")
#: The widest layer a model spec may ask for (2**64 reached torch as a TypeError).
MAX_WIDTH = 1 << 24
_FORMS = "logreg, mlp, mlp:H, mlp:H1-H2[-...], cnn, cnn:C1-C2[-...]"


def _parse_sizes(kind, arg, default):
    """Layer sizes of ``mlp:H1-H2`` (hidden units) or ``cnn:C1-C2`` (filters a
    convolution); ``default`` when there is no ``:`` (``mlp:`` is an error)."""
    if arg is None:
        return default
    try:
        sizes = tuple(int(h) for h in arg.split("-"))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_WIDTH:
        unit = "H" if kind == "mlp" else "C"
        raise ConfigError(f"bad model '{kind}:{arg}'; expected {kind}:{unit} or "
                          f"{kind}:{unit}1-{unit}2 with integer sizes in [1, {MAX_WIDTH}]")
    return sizes


def _mlp(input_shape, num_classes, hidden):
    layers = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


#: Filters a convolution of ``cnn`` without widths, for 1-D and 2-D inputs.
CNN1D_WIDTHS, CNN2D_WIDTHS = (32, 32, 32), (16, 32)


def _cnn1d(channels, num_classes, widths=CNN1D_WIDTHS):
    """1-D conv net for ``(C, L)`` signals such as MNIST-1D (~8k params by default):
    a kernel of 5, then of 3, max-pooling by 2 between the convolutions, and the
    last one max-pooled to 5 positions."""
    layers = []
    for n, width in enumerate(widths):
        kernel = 5 if n == 0 else 3
        layers += [nn.Conv1d(channels, width, kernel, padding=kernel // 2), nn.ReLU()]
        layers.append(nn.MaxPool1d(2) if n < len(widths) - 1 else nn.AdaptiveMaxPool1d(5))
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 5, num_classes))


def _cnn2d(channels, num_classes, widths=CNN2D_WIDTHS):
    """2-D conv net for ``(C, H, W)`` images of any size (~10k params by default):
    3x3 convolutions, the last one max-pooled to 4x4."""
    layers = []
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(4), nn.Flatten(),
                         nn.Linear(channels * 16, num_classes))


def _cnn(input_shape, num_classes, widths=None):
    if len(input_shape) == 1:  # plain vectors: treat as a 1-channel signal
        return nn.Sequential(nn.Unflatten(1, (1, input_shape[0])),
                             _cnn((1, input_shape[0]), num_classes, widths))
    if len(input_shape) == 2:
        widths = widths or CNN1D_WIDTHS
        if input_shape[1] >> (len(widths) - 1) < 1:
            raise ConfigError(f"model 'cnn:{'-'.join(map(str, widths))}' pools a signal of "
                              f"length {input_shape[1]} to nothing in its {len(widths)} "
                              "convolutions; use fewer")
        return _cnn1d(input_shape[0], num_classes, widths)
    if len(input_shape) == 3:
        return _cnn2d(input_shape[0], num_classes, widths or CNN2D_WIDTHS)
    raise ConfigError(f"model 'cnn' does not fit input shape {input_shape}; "
                      "expected (L,), (C, L) or (C, H, W)")


_INIT_LOCK = threading.Lock()

#: Modules handed to ``run_cluster(model=...)``, by name ``custom:N``.  Node
#: processes are forked after registration and node threads share the table,
#: so each node builds a deep copy; nothing is pickled.
CUSTOM: dict = {}


_NAMES = itertools.count()


def register_module(module: nn.Module) -> str:
    """Make a user's module buildable by name; return that name (``custom:N``)."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model must be a model name or a torch.nn.Module instance, got "
                          f"{type(module).__name__}")
    name = f"custom:{next(_NAMES)}"
    CUSTOM[name] = module
    return name


def probe_model(model: nn.Module, ds, what: str) -> None:
    """One forward and backward pass on two training samples: a user's module that
    does not map the dataset's inputs to its class logits is a usage error here, not
    a failure in every node."""
    x = torch.from_numpy(ds.x_train[:2].copy())
    try:
        out = model(x)
    except Exception as exc:  # an assert or a typo (AttributeError) in it too: the cause
        first = (str(exc).strip().splitlines() or [""])[0]  # keeps the caller's traceback
        raise ConfigError(f"model {what} fails on a batch of {tuple(x.shape)}: "
                          f"{type(exc).__name__}: {first}".rstrip(": ")) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), ds.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {what} maps a batch of {tuple(x.shape)} to {shape}; "
                          f"expected ({len(x)}, {ds.num_classes}) class logits")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model {what} has no trainable parameters")
    try:
        out.float().logsumexp(1).sum().backward()
    except RuntimeError as exc:
        raise ConfigError(f"model {what} cannot be trained: {exc}") from None
    finally:
        model.zero_grad(set_to_none=True)


def release_module(name: str) -> None:
    """Forget a module registered for a run that is over."""
    CUSTOM.pop(name, None)


def build_model(name: str, input_shape: tuple, num_classes: int, *,
                seed: int = 0) -> nn.Module:
    """Build a classifier with deterministic initial weights.

    Parameters
    ----------
    name : str
        ``logreg``, ``mlp`` (one hidden layer of 64), ``mlp:H``,
        ``mlp:H1-H2``, ``cnn`` (1-D conv for ``(C, L)`` inputs, 2-D conv
        for ``(C, H, W)`` inputs) or ``cnn:C1-C2`` (the same with C1, C2, ...
        filters a convolution; ``cnn`` is ``cnn:32-32-32`` in 1-D and
        ``cnn:16-32`` in 2-D).
    input_shape : tuple of int
        Shape of one sample (without the batch dimension).
    num_classes : int
        Number of output logits.
    seed : int
        Initialisation seed; the global torch RNG is left untouched.

    Returns
    -------
    torch.nn.Module
        A float32 model in train mode.

    Raises
    ------
    ConfigError
        Unknown name or a model that does not fit the input shape.
    """
    if str(name) in CUSTOM:  # every node starts from a copy of the user's weights
        with _INIT_LOCK:
            return copy.deepcopy(CUSTOM[name]).float().train()
    kind, colon, arg = str(name).partition(":")
    arg = arg if colon else None
    input_shape = tuple(int(s) for s in input_shape)
    # Module initialisation draws from torch's one global generator.  Nodes hosted
    # as threads build their models concurrently, and every node must start from
    # exactly the same weights (compressed gossip relies on it), so builds are
    # serialised.
    if kind == "logreg" and arg is None:
        make = functools.partial(_mlp, input_shape, num_classes, ())
    elif kind == "mlp":
        make = functools.partial(_mlp, input_shape, num_classes, _parse_sizes(kind, arg, (64,)))
    elif kind == "cnn":
        make = functools.partial(_cnn, input_shape, num_classes, _parse_sizes(kind, arg, None))
    else:
        raise ConfigError(f"unknown model {name!r}; valid: {_FORMS}")
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = make()
        except (MemoryError, RuntimeError) as exc:  # widths too large for this memory
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"model {name!r} cannot be built here: {first}") from None
    return model.float().train()


def flatten_params(model: nn.Module) -> torch.Tensor:
    """All parameters, in ``model.parameters()`` order, as a new 1-D float32 tensor."""
    return torch.cat([p.detach().reshape(-1).float()
                      for p in model.parameters()])


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """Move every parameter into one contiguous buffer and return it.

    Each parameter becomes a view of its slice, in ``model.parameters()`` order,
    so the buffer *is* the flat vector of :func:`flatten_params`: reading or
    replacing all parameters is one copy, with no walk over the modules.  Call it
    before an optimiser is built (one built earlier would hold the old tensors).
    """
    params = list(model.parameters())
    if not params:
        return torch.empty(0)
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    view_parameters(params, flat)
    return flat


def view_parameters(params: list, flat: torch.Tensor) -> None:
    """Make each of ``params`` a view of its slice of ``flat``, in order (no copy)."""
    offset = 0
    for p in params:
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def assign_params(model: nn.Module, flat) -> None:
    """Copy a flat vector (tensor or array) into the parameters, in place.

    Raises
    ------
    ValueError
        If ``flat`` does not have exactly :func:`num_params` elements.
    """
    flat = torch.as_tensor(np.asarray(flat) if not torch.is_tensor(flat)
                           else flat).reshape(-1)
    expected = num_params(model)
    if flat.numel() != expected:
        raise ValueError(f"flat parameter vector has {flat.numel()} "
                         f"elements, model has {expected}")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def num_params(model: nn.Module) -> int:
    """Total number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def param_shapes(model: nn.Module) -> list[tuple[str, tuple]]:
    """``(name, shape)`` of each parameter, in flattening order."""
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]
