"""The nodes' final models on disk (``--save-models``): ``models/node-ID.pt``.

A node that ends its run (its last round, or a stop) sends its model's state, parameters
and buffers by name, to the launcher in one ``weights`` message, before its bye: a
msgpack frame that describes the tensors (names, shapes, dtypes), then one raw frame a
tensor.  The description travels in a frame of its own, not the header, whose 64 KiB
would hold only a thousand or two names.  No node writes a file itself, so a node on
another host (``p2pfl node``, Ray) saves its model where the run's other results are.
The launcher checks the message and writes it atomically as a ``torch.save`` state
dict, which ``model.load_state_dict(torch.load(path, weights_only=True))`` reads back
(no pickled code is loaded).

A gossip node's file holds its own model; a server-mode worker's holds the model it ended
with: the final global model (fedavg, stc), its cluster's (cfl), or its own (fd, cfd),
unless it was offline at the end or the run was interrupted (then its latest local one).
The coordinator sends none: its model is every worker's.
"""

from __future__ import annotations

import fnmatch
import io
import math
import os

import msgpack
import numpy as np

from .atomic import write_atomic
from .transport.wire import DEFAULT_LIMITS, DTYPES

__all__ = ["MODELS_DIR", "model_path", "state_fields", "checked_state", "write_state",
           "remove_stale", "load_state"]

MODELS_DIR = "models"
#: Tensor dtypes that the wire does not carry raw travel as another, and are restored.
SENT_AS = {"bfloat16": "float32", "bool": "uint8"}
#: The longest parameter or buffer name taken (PyTorch's are dotted module paths).
MAX_NAME = 512
#: Tensors a model may have: one frame each, after the description.
MAX_TENSORS = DEFAULT_LIMITS.max_frames - 1
#: The largest description frame the launcher reads: what MAX_TENSORS names of MAX_NAME
#: characters, their shapes and dtypes take, with room to spare.
MAX_DESCRIPTION = 4 << 20


def model_path(out_dir: str, node_id: int) -> str:
    return os.path.join(out_dir, MODELS_DIR, f"node-{int(node_id)}.pt")


def remove_stale(out_dir: str) -> None:
    """Remove the model files an earlier run left in ``out_dir``: a node that saves none
    this time must not seem to have saved them."""
    folder = os.path.join(out_dir, MODELS_DIR)
    if os.path.isdir(folder):  # listed, not globbed: the folder's name may hold [ or *
        for name in fnmatch.filter(os.listdir(folder), "node-*.pt"):
            os.remove(os.path.join(folder, name))


def state_fields(state: dict) -> dict:
    """The ``frames`` of a ``weights`` message holding ``state`` (a ``state_dict``:
    names to tensors, on any device).  ValueError says why a state cannot be sent: an
    entry that is not a dense tensor (a module's extra state), a dtype the wire does
    not carry, more tensors than a message takes, or one larger than a frame."""
    import torch

    if len(state) > MAX_TENSORS:
        raise ValueError(f"{len(state)} tensors; a message takes {MAX_TENSORS}")
    names, frames, shapes, dtypes, kept = [], [], [], [], []
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise ValueError(f"{name}: not a dense tensor ({type(tensor).__name__})")
        dtype = str(tensor.dtype).removeprefix("torch.")
        sent = SENT_AS.get(dtype, dtype)
        if sent not in DTYPES:
            raise ValueError(f"{name}: tensors of {dtype} cannot be saved")
        t = tensor.detach()
        if sent != dtype:
            t = t.to(getattr(torch, sent))
        a = t.cpu().contiguous().numpy()
        if a.nbytes > DEFAULT_LIMITS.max_frame_bytes or a.size > DEFAULT_LIMITS.max_tensor_elems:
            raise ValueError(f"{name}: {a.nbytes} bytes, beyond a frame's limit")
        names.append(str(name))
        frames.append(a.reshape(-1).view(np.uint8))
        shapes.append(list(a.shape))
        dtypes.append(sent)
        kept.append(dtype)
    description = msgpack.packb({"names": names, "shapes": shapes, "dtypes": dtypes,
                                 "torch_dtypes": kept}, use_bin_type=True)
    if len(description) > MAX_DESCRIPTION:
        raise ValueError(f"the tensors' names take {len(description)} bytes, beyond "
                         f"{MAX_DESCRIPTION}")
    return {"frames": [description, *frames]}


def _description(frame) -> dict | None:
    if len(frame) > MAX_DESCRIPTION:
        return None
    try:  # bounded: 16 MiB of empty maps became 16 M Python objects (1.2 GB)
        d = msgpack.unpackb(frame, raw=False, strict_map_key=True,
                            max_array_len=MAX_TENSORS, max_map_len=8,
                            max_str_len=MAX_NAME, max_bin_len=0, max_ext_len=0)
    except Exception:  # msgpack raises several types on hostile input
        return None
    return d if isinstance(d, dict) else None


def _shape(shape, sent, length) -> bool:
    """A short list of non-negative ints whose elements of ``sent`` fill ``length`` bytes."""
    top = DEFAULT_LIMITS.max_tensor_elems  # a dimension of 2**62 beside a 0 is empty, and
    if type(shape) is not list or len(shape) > DEFAULT_LIMITS.max_ndim or \
            not all(type(n) is int and 0 <= n <= top for n in shape):  # numpy refuses it
        return False
    return math.prod(shape) <= top and math.prod(shape) * np.dtype(sent).itemsize == length


def checked_state(msg) -> list | None:
    """``[(name, array, torch dtype name)]`` of a ``weights`` message, or None if it is
    malformed: a description that is not one, names that are not distinct short
    strings, a dtype not carried or not one it was sent as, or a frame that its shape
    and dtype do not fill exactly."""
    if not msg.frames:
        return None
    d = _description(msg.frames[0])
    frames = msg.frames[1:]
    if d is None:
        return None
    names, shapes, dtypes, kept = (d.get(k) for k in ("names", "shapes", "dtypes",
                                                       "torch_dtypes"))
    if not all(isinstance(v, list) and len(v) == len(frames)
               for v in (names, shapes, dtypes, kept)):
        return None
    if not all(type(n) is str and 0 < len(n) <= MAX_NAME for n in names) or \
            len(set(names)) != len(names):
        return None
    out = []
    for name, shape, sent, dtype, frame in zip(names, shapes, dtypes, kept, frames):
        if type(sent) is not str or sent not in DTYPES or type(dtype) is not str or \
                SENT_AS.get(dtype, dtype) != sent or not _shape(shape, sent, frame.nbytes):
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
    buf = io.BytesIO()  # torch.save's own file errors are RuntimeErrors that name no file
    torch.save(sd, buf)
    return write_atomic(model_path(out_dir, node_id), lambda fh: fh.write(buf.getbuffer()))


def load_state(path) -> dict:
    """A saved model's state dict, on the CPU, never unpickling code."""
    import torch

    return torch.load(path, weights_only=True, map_location="cpu")
