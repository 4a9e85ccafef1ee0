"""The coordinator's checkpoint: one msgpack document, written atomically.

File layout (one msgpack map, validated before the state is decoded)::

    {"format": "p2pfl-checkpoint", "version": 1, "round": R,
     "crc32": CRC of "state", "state": <bin: the msgpack-packed state>}

The state is a nested structure of dicts (str or int keys), lists, tuples,
ints (any size), floats, str, bool, None, bytes, numpy arrays and torch
tensors.  Arrays, tensors, tuples and integers beyond 64 bits travel as
msgpack ExtTypes (:data:`EXT_NDARRAY`, ...); an array's payload is a small
msgpack list ``[dtype, shape, raw little-endian bytes]``.  Tensors come back
as CPU tensors of their dtype (bit-exact; ``requires_grad`` is not kept),
numpy arrays as writable numpy arrays.  Nothing is pickled, nothing is
evaluated: a file that does not parse, fails its CRC, or declares sizes that
do not add up raises ``ValueError``.

>>> import os, tempfile, torch
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.msgpack")
>>> save(path, 3, {"model": torch.ones(2), "seen": (1, 2)})
>>> rnd, state = load(path)
>>> rnd, state["model"].tolist(), state["seen"]
(3, [1.0, 1.0], (1, 2))
"""

from __future__ import annotations

import os
import zlib

import msgpack
import numpy as np
import torch

from ..atomic import write_atomic

__all__ = ["save", "load", "dumps", "loads", "FORMAT", "VERSION", "MAX_BYTES"]

FORMAT = "p2pfl-checkpoint"
VERSION = 1
#: The largest checkpoint file :func:`load` reads (bytes).
MAX_BYTES = 1 << 34
MAX_NDIM = 32
EXT_NDARRAY, EXT_TENSOR, EXT_TUPLE, EXT_BIGINT = 1, 2, 3, 4

_NP_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "float16", "float32", "float64")
_TORCH_DTYPES = {str(t).removeprefix("torch."): t for t in (
    torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
    torch.float16, torch.bfloat16, torch.float32, torch.float64)}


# ------------------------------------------------------------------ encoding
def _array_payload(arr: np.ndarray, dtype: str) -> bytes:
    raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return msgpack.packb([dtype, list(arr.shape), raw])


def _tensor_payload(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in _TORCH_DTYPES:
        raise TypeError(f"cannot checkpoint a tensor of dtype {t.dtype}")
    arr = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
    return _array_payload(arr, name)


def _default(obj):
    """msgpack's hook for what it cannot pack itself."""
    if isinstance(obj, torch.Tensor):
        return msgpack.ExtType(EXT_TENSOR, _tensor_payload(obj))
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _NP_DTYPES:
            raise TypeError(f"cannot checkpoint a numpy array of dtype {obj.dtype}")
        return msgpack.ExtType(EXT_NDARRAY, _array_payload(obj, obj.dtype.name))
    if isinstance(obj, tuple):  # strict_types: msgpack leaves tuples to us
        return msgpack.ExtType(EXT_TUPLE, _pack(list(obj)))
    if isinstance(obj, int) and not isinstance(obj, bool):  # beyond 64 bits
        size = (obj.bit_length() + 8) // 8
        return msgpack.ExtType(EXT_BIGINT, obj.to_bytes(size, "little", signed=True))
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def _check_keys(obj, where: str = "state") -> None:
    """Dict keys must be str or int (not bool): what msgpack maps round-trip."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"{where}: dict key {k!r} is not a str or an int")
            _check_keys(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_keys(v, f"{where}[{i}]")


def _pack(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=True)


def dumps(round: int, state: dict) -> bytes:
    """The checkpoint document for ``state`` after round ``round``."""
    if not isinstance(round, int) or isinstance(round, bool) or round < 0:
        raise ValueError(f"round should be an int >= 0, got {round!r}")
    if not isinstance(state, dict):
        raise TypeError(f"state should be a dict, got {type(state).__name__}")
    _check_keys(state)
    body = _pack(state)
    return msgpack.packb({"format": FORMAT, "version": VERSION, "round": round,
                          "crc32": zlib.crc32(body), "state": body}, use_bin_type=True)


# ------------------------------------------------------------------ decoding
def _array(data: bytes) -> tuple[str, np.ndarray]:
    fields = msgpack.unpackb(data, raw=False)
    if (not isinstance(fields, list) or len(fields) != 3 or not isinstance(fields[0], str)
            or not isinstance(fields[1], list) or not isinstance(fields[2], bytes)):
        raise ValueError("malformed array in checkpoint")
    dtype, shape, raw = fields
    if len(shape) > MAX_NDIM or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"bad array shape {shape!r} in checkpoint")
    base = "int16" if dtype == "bfloat16" else dtype
    if base not in _NP_DTYPES:
        raise ValueError(f"unknown array dtype {dtype!r} in checkpoint")
    np_dtype = np.dtype(base).newbyteorder("<")
    if int(np.prod(shape, dtype=object)) * np_dtype.itemsize != len(raw):
        raise ValueError(f"array of shape {shape} and dtype {dtype} has {len(raw)} bytes")
    arr = np.frombuffer(raw, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
    return dtype, arr


def _ext_hook(code: int, data: bytes):
    if code == EXT_NDARRAY:
        dtype, arr = _array(data)
        if dtype == "bfloat16":
            raise ValueError("bfloat16 numpy array in checkpoint")
        return arr
    if code == EXT_TENSOR:
        dtype, arr = _array(data)
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"unknown tensor dtype {dtype!r} in checkpoint")
        t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if dtype == "bfloat16" else t
    if code == EXT_TUPLE:
        items = _unpack(data)
        if not isinstance(items, list):
            raise ValueError("malformed tuple in checkpoint")
        return tuple(items)
    if code == EXT_BIGINT:
        return int.from_bytes(data, "little", signed=True)
    raise ValueError(f"unknown extension type {code} in checkpoint")


def _unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False,
                           use_list=True)


def _header(data: bytes) -> dict:
    try:
        doc = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # truncated, trailing bytes, not msgpack at all
        raise ValueError(f"not a readable checkpoint: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a p2pfl checkpoint (no format marker)")
    if doc.get("version") != VERSION:
        raise ValueError(f"checkpoint version {doc.get('version')!r}, expected {VERSION}")
    rnd, body = doc.get("round"), doc.get("state")
    if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0:
        raise ValueError(f"bad checkpoint round {rnd!r}")
    if not isinstance(body, bytes) or zlib.crc32(body) != doc.get("crc32"):
        raise ValueError("checkpoint state fails its CRC check (corrupt file)")
    return doc


def loads(data: bytes) -> tuple[int, dict]:
    """Inverse of :func:`dumps`; ``ValueError`` on anything malformed."""
    doc = _header(bytes(data))
    try:
        state = _unpack(doc["state"])
    except ValueError:
        raise
    except Exception as exc:  # msgpack's own errors, RecursionError, ...
        raise ValueError(f"corrupt checkpoint state: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError("checkpoint state is not a map")
    return doc["round"], state


# ---------------------------------------------------------------------- files
def _write(f, data: bytes) -> None:
    """Write all of ``data`` to the open file ``f`` (a seam for crash tests)."""
    f.write(data)


def save(path, round: int, state: dict) -> None:
    """Write the checkpoint atomically (:func:`p2pfl.atomic.write_atomic`).

    A crash at any point leaves either the previous checkpoint or the new one
    (and, after a hard kill, perhaps a stray ``.NAME.*.tmp`` beside it).  The
    file is readable by its owner only: it holds the model and every worker's state.
    """
    data = dumps(round, state)
    write_atomic(path, lambda fh: _write(fh, data), private=True)


def load(path, max_bytes: int = MAX_BYTES):
    """``(round, state)`` from the checkpoint at ``path``; None if there is none.

    Raises ``ValueError`` for a corrupt, truncated or oversized file.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None
    if size > max_bytes:
        raise ValueError(f"checkpoint {path} has {size} bytes, more than the limit {max_bytes}")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        return loads(data)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from exc
