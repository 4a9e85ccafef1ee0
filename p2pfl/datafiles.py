"""Readers for dataset files on the local disk: IDX (MNIST) and CIFAR-10.

These readers only ever see files chosen by the local user; data received
from peers never goes through them.  The CIFAR-10 reader nevertheless
unpickles with an allow-list that resolves only numpy array reconstruction.
Both are re-exported by :mod:`p2pfl.data`.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np

from p2pfl.errors import DataError

__all__ = ["read_idx", "read_cifar10_batch"]

# ---------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), optionally gzip-compressed.

    Parameters
    ----------
    path : str or os.PathLike
        File to read; a ``.gz`` suffix means gzip.

    Returns
    -------
    numpy.ndarray
        The array, in native byte order, with the dims stored in the header.

    Raises
    ------
    DataError
        On a bad magic number, unknown dtype code or a size that does not
        match the header.
    """
    buf = _read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number)")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{str(path)!r}: unknown IDX dtype code {code:#04x}; "
                        f"valid: {', '.join(f'{c:#04x}' for c in _IDX_DTYPES)}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(buf) < header:
        raise DataError(f"{str(path)!r}: truncated IDX header ({ndim} dims)")
    dims = [int(d) for d in np.frombuffer(buf, ">u4", ndim, 4)]
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(buf) != expected:
        raise DataError(f"{str(path)!r}: IDX size {len(buf)} bytes does not "
                        f"match header dims {dims} ({expected} bytes)")
    data = np.frombuffer(buf, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_file(folder, names):
    for name in names:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise DataError(f"no {names[0]}[.gz] in {str(folder)!r}")


# ---------------------------------------------------------------- CIFAR-10


def _latin1_encode(text, encoding="latin1"):
    """Stand-in for ``_codecs.encode``, used by protocol-2 pickles of bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} not allowed")
    return text.encode("latin1")


def _numpy_globals():
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction globals."""

    _allowed = _numpy_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed") from None


def _get(batch, key):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"CIFAR-10 batch has no {key!r} entry")


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 "python version" batch file.

    The file is a pickle, so it is loaded with an unpickler that resolves
    only numpy array reconstruction; anything else (``os.system``, ...) is
    refused.  This reader is meant for local files the user chose, never
    for data received from peers.

    Parameters
    ----------
    path : str or os.PathLike
        A ``data_batch_N`` or ``test_batch`` file.

    Returns
    -------
    x : numpy.ndarray
        ``uint8`` images of shape ``(N, 3, 32, 32)``.
    y : numpy.ndarray
        ``int64`` labels of shape ``(N,)``.
    """
    raw = _read_bytes(path)
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any malformed or hostile pickle
        raise DataError(f"{str(path)!r} is not a CIFAR-10 batch: {exc}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{str(path)!r} is not a CIFAR-10 batch (not a dict)")
    x = np.asarray(_get(batch, "data"))
    y = np.asarray(_get(batch, "labels"))
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 \
            or y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{str(path)!r}: expected uint8 data (N, 3072) and N "
                        f"integer labels, got {x.dtype} {x.shape}, {y.shape}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)
