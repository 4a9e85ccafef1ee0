"""The nodes' final models on disk (``--save-models``): ``models/node-ID.pt``.

A node that ends its run (its last round, or a stop) sends its model's state, parameters
and buffers by name, to the launcher in one ``weights`` message, before its bye: raw
tensor frames, their shapes and dtypes in the header (:mod:`~p2pfl.transport.wire`), the
names in its meta.  No node writes a file itself, so a node on another host (``p2pfl
node``, Ray) saves its model where the run's other results are.  The launcher checks
the message and writes it atomically as a ``torch.save`` state dict, which
``model.load_state_dict(torch.load(path))`` reads back (``weights_only``: no pickled
code is loaded).

A gossip node's file holds its own model; a server-mode worker's holds what it ended
with: the final global model (fedavg, stc), its cluster's (cfl), or its own (fd, cfd).
The coordinator sends none: its model is every worker's.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from .atomic import write_atomic
from .transport.wire import DTYPES

__all__ = ["MODELS_DIR", "model_path", "state_fields", "checked_state", "write_state",
           "remove_stale"]

MODELS_DIR = "models"
#: Tensor dtypes that the wire does not carry raw travel as another, and are restored.
SENT_AS = {"bfloat16": "float32", "bool": "uint8"}
#: The longest parameter or buffer name taken (PyTorch's are dotted module paths).
MAX_NAME = 512


def model_path(out_dir: str, node_id: int) -> str:
    return os.path.join(out_dir, MODELS_DIR, f"node-{int(node_id)}.pt")


def remove_stale(out_dir: str) -> None:
    """Remove the model files an earlier run left in ``out_dir``: a node that saves none
    this time must not seem to have saved them."""
    for path in glob.glob(os.path.join(out_dir, MODELS_DIR, "node-*.pt")):
        os.remove(path)


def state_fields(state: dict) -> dict:
    """The ``frames``, ``shapes``, ``dtypes`` and ``meta`` of a ``weights`` message
    holding ``state`` (a ``state_dict``: names to tensors, on any device)."""
    import torch

    names, frames, shapes, dtypes, kept = [], [], [], [], []
    for name, tensor in state.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        sent = SENT_AS.get(dtype, dtype)
        if sent not in DTYPES:
            raise ValueError(f"{name}: tensors of {dtype} cannot be saved")
        t = tensor.detach()
        if sent != dtype:
            t = t.to(getattr(torch, sent))
        a = t.cpu().contiguous().numpy()
        names.append(name)
        frames.append(a.reshape(-1).view(np.uint8))
        shapes.append(list(a.shape))
        dtypes.append(sent)
        kept.append(dtype)
    return {"frames": frames, "shapes": shapes, "dtypes": dtypes,
            "meta": {"names": names, "torch_dtypes": kept}}


def checked_state(msg) -> list | None:
    """``[(name, array, torch dtype name)]`` of a ``weights`` message (the wire checked
    its frames against their shapes and dtypes), or None if it is malformed: names
    that are not distinct short strings, one a tensor, or a dtype not one it was sent as."""
    names, kept = msg.meta.get("names"), msg.meta.get("torch_dtypes")
    if not isinstance(names, list) or not isinstance(kept, list):
        return None
    if not len(names) == len(kept) == len(msg.frames) == len(msg.shapes):
        return None
    if not all(type(n) is str and 0 < len(n) <= MAX_NAME for n in names) or \
            len(set(names)) != len(names):
        return None
    out = []
    for name, dtype, frame, shape, sent in zip(names, kept, msg.frames, msg.shapes,
                                                msg.dtypes):
        if type(dtype) is not str or SENT_AS.get(dtype, dtype) != sent:
            return None
        out.append((name, np.frombuffer(frame, np.dtype(sent).newbyteorder("<"))
                    .reshape(shape), dtype))
    return out


def write_state(out_dir: str, node_id: int, state: list) -> str:
    """Write a checked state (:func:`checked_state`) as ``models/node-ID.pt``."""
    import torch

    sd = {}
    for name, array, dtype in state:
        t = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
        sd[name] = t.to(getattr(torch, dtype)) if str(t.dtype) != f"torch.{dtype}" else t
    return write_atomic(model_path(out_dir, node_id), lambda fh: torch.save(sd, fh))
