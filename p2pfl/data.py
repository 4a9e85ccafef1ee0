"""Datasets and their partitioning across nodes.

Every dataset comes from the local machine: it is bundled with a library
(``digits``), generated (``mnist1d``, ``synthetic``) or read from files the
user points at (``mnist:PATH``, ``cifar10:PATH``).  Nothing is downloaded.

The file readers (:func:`read_idx`, :func:`read_cifar10_batch`) only ever see
files chosen by the local user; data received from peers never goes through
them.  The CIFAR-10 reader nevertheless unpickles with an allow-list.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2pfl.errors import DataError

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "read_idx",
    "read_cifar10_batch",
    "partition",
    "partition_groups",
    "group_label_permutations",
    "apply_label_permutation",
    "class_histogram",
]

#: Dataset names accepted by :func:`load_dataset` (with their argument forms).
DATASETS = ("digits", "mnist1d", "synthetic", "mnist", "cifar10")
_FORMS = "digits, mnist1d, synthetic[:CLASSES:DIM], mnist:PATH, cifar10:PATH"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held in memory.

    Attributes
    ----------
    name : str
        The spec the dataset was loaded from.
    x_train, x_test : numpy.ndarray
        ``float32`` features of shape ``(N, *input_shape)``, standardised.
    y_train, y_test : numpy.ndarray
        ``int64`` labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes.
    input_shape : tuple of int
        Shape of one sample.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple


def _make(name, x_tr, y_tr, x_te, y_te, num_classes):
    """Build a :class:`Dataset` with canonical dtypes."""
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    return Dataset(name, x_tr, np.asarray(y_tr, dtype=np.int64), x_te,
                   np.asarray(y_te, dtype=np.int64), int(num_classes),
                   tuple(int(s) for s in x_tr.shape[1:]))


def _standardise(x_tr, x_te, axis):
    """Standardise both splits with mean/std of ``x_tr`` reduced over ``axis``."""
    mean = x_tr.mean(axis=axis, keepdims=True)
    std = x_tr.std(axis=axis, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)
    return (x_tr - mean) / std, (x_te - mean) / std


def _stratified_split(y, test_frac, seed):
    """Return ``(train_idx, test_idx)`` with ``test_frac`` of each class in test."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]
    counts = np.bincount(y)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ys = y[order]
    rank = np.arange(len(y)) - starts[ys]
    is_test = rank < np.round(test_frac * counts)[ys]
    return np.sort(order[~is_test]), np.sort(order[is_test])


def _load_digits(seed):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn: "
                        "pip install scikit-learn") from None
    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr, te = _stratified_split(y, 0.2, seed)
    return _make("digits", x[tr], y[tr], x[te], y[te], 10)


def _cache_dir(cache_dir):
    if cache_dir is None:
        cache_dir = os.environ.get("P2PFL_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "p2pfl")
    return Path(cache_dir)


def _atomic_savez(path, **arrays):
    """Write an ``.npz`` to a temp file in the same folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mnist1d_arrays(cache_dir):
    """The standard MNIST-1D arrays, generated once and cached as ``.npz``."""
    path = _cache_dir(cache_dir) / "mnist1d-v1-4000-42.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # corrupt cache: regenerate
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("dataset 'mnist1d' needs the mnist1d package: "
                        "pip install mnist1d") from None
    raw = make_dataset(get_dataset_args())
    arrays = {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}
    try:
        _atomic_savez(path, **arrays)
    except OSError:
        pass  # an unwritable cache only costs regeneration time
    return arrays


def _load_mnist1d(cache_dir):
    a = _mnist1d_arrays(cache_dir)
    x_tr, x_te = _standardise(a["x"].astype(np.float32),
                              a["x_test"].astype(np.float32), axis=None)
    return _make("mnist1d", x_tr[:, None, :], a["y"], x_te[:, None, :],
                 a["y_test"], 10)


def _int_arg(text, what, lo, hi):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise DataError(f"bad {what} {text!r} in synthetic spec; "
                        f"expected an integer in [{lo}, {hi}]")
    return value


def _load_synthetic(arg, seed):
    """Gaussian classes: unit-variance blobs around random class means."""
    parts = arg.split(":") if arg else []
    if len(parts) not in (0, 2):
        raise DataError(f"bad synthetic spec 'synthetic:{arg}'; "
                        "expected synthetic or synthetic:CLASSES:DIM")
    classes = _int_arg(parts[0], "CLASSES", 2, 1000) if parts else 10
    dim = _int_arg(parts[1], "DIM", 1, 100000) if parts else 32
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (classes, dim))
    means *= 3.4 / np.linalg.norm(means, axis=1, keepdims=True)
    n_tr, n_te = 3000, 1000
    y = rng.integers(0, classes, n_tr + n_te)
    x = means[y] + rng.normal(0.0, 1.0, (n_tr + n_te, dim))
    x_tr, x_te = _standardise(x[:n_tr], x[n_tr:], axis=0)
    name = f"synthetic:{classes}:{dim}"
    return _make(name, x_tr, y[:n_tr], x_te, y[n_tr:], classes)


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


def _mnist_split(folder, stem):
    x = read_idx(_find_file(folder, [f"{stem}-images-idx3-ubyte",
                                     f"{stem}-images.idx3-ubyte"]))
    y = read_idx(_find_file(folder, [f"{stem}-labels-idx1-ubyte",
                                     f"{stem}-labels.idx1-ubyte"]))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"MNIST {stem} files in {str(folder)!r} disagree: "
                        f"images {x.shape}, labels {y.shape}")
    return x, y.astype(np.int64)


def _load_mnist(folder):
    """MNIST-format IDX files (also works for Fashion-MNIST, KMNIST)."""
    x_tr, y_tr = _mnist_split(folder, "train")
    x_te, y_te = _mnist_split(folder, "t10k")
    x_tr, x_te = _standardise(x_tr[:, None].astype(np.float32) / 255.0,
                              x_te[:, None].astype(np.float32) / 255.0,
                              axis=(0, 2, 3))
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return _make(f"mnist:{folder}", x_tr, y_tr, x_te, y_te, num_classes)


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


def _load_cifar10(folder):
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    parts = [read_cifar10_batch(_find_file(folder, [f"data_batch_{i}"]))
             for i in range(1, 6)]
    x_te, y_te = read_cifar10_batch(_find_file(folder, ["test_batch"]))
    x_tr = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_tr = np.concatenate([p[1] for p in parts])
    x_tr, x_te = _standardise(x_tr, x_te.astype(np.float32) / 255.0,
                              axis=(0, 2, 3))
    return _make(f"cifar10:{folder}", x_tr, y_tr, x_te, y_te, 10)


# ---------------------------------------------------------------- entry point


def _folder(kind, arg, data_dir):
    text = arg or data_dir
    if not text:
        raise DataError(f"dataset {kind!r} needs a folder: {kind}:PATH")
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise DataError(f"{kind} folder {str(folder)!r} does not exist")
    return folder


def load_dataset(name: str, *, seed: int = 0, data_dir: str | None = None,
                 cache_dir: str | None = None) -> Dataset:
    """Load a dataset by spec.

    Parameters
    ----------
    name : str
        One of ``digits``, ``mnist1d``, ``synthetic[:CLASSES:DIM]``,
        ``mnist:PATH`` or ``cifar10:PATH``.
    seed : int
        Seed for the ``digits`` train/test split and ``synthetic`` data.
        ``mnist1d`` is always the standard (seed 42) dataset.
    data_dir : str, optional
        Folder for ``mnist``/``cifar10`` when the spec has no ``:PATH``.
    cache_dir : str, optional
        Cache folder for generated data; default ``$P2PFL_CACHE`` or
        ``~/.cache/p2pfl``.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        Unknown name, missing folder or unreadable files.
    """
    kind, _, arg = str(name).partition(":")
    if kind == "digits" and not arg:
        return _load_digits(seed)
    if kind == "mnist1d" and not arg:
        return _load_mnist1d(cache_dir)
    if kind == "synthetic":
        return _load_synthetic(arg, seed)
    if kind == "mnist":
        return _load_mnist(_folder(kind, arg, data_dir))
    if kind == "cifar10":
        return _load_cifar10(_folder(kind, arg, data_dir))
    raise DataError(f"unknown dataset {name!r}; valid: {_FORMS}")


# ---------------------------------------------------------------- partitions

_SPECS = "iid, dirichlet:ALPHA, shards:S, groups:K"


def _parse_spec(spec):
    """Split a partition spec into ``(kind, number)``; DataError if bad."""
    kind, _, arg = str(spec).partition(":")
    try:
        if kind == "iid" and not arg:
            return kind, None
        if kind == "dirichlet" and 0 < float(arg) < float("inf"):
            return kind, float(arg)
        if kind in ("shards", "groups") and int(arg) >= 1:
            return kind, int(arg)
    except ValueError:
        pass
    raise DataError(f"bad partition spec {spec!r}; valid: {_SPECS} "
                    "(ALPHA > 0, S and K integers >= 1)")


def _sizes(n, num_nodes, shares):
    """Split ``n`` into ``num_nodes`` integer sizes proportional to ``shares``."""
    w = np.ones(num_nodes) if shares is None else np.asarray(shares, float)
    if w.shape != (num_nodes,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise DataError(f"bad shares {shares!r}; expected {num_nodes} "
                        "positive numbers, one per node")
    raw = w / w.sum() * n
    sizes = np.floor(raw).astype(np.int64)
    extra = np.argsort(sizes - raw, kind="stable")[: n - sizes.sum()]
    sizes[extra] += 1
    return sizes


def _top_up(parts, min_size):
    """Move samples from the largest parts so every part has ``min_size``."""
    sizes = np.array([len(p) for p in parts])
    for k in np.flatnonzero(sizes < min_size):
        donor = int(np.argmax(sizes))
        take = min_size - sizes[k]
        parts[k] = np.concatenate([parts[k], parts[donor][-take:]])
        parts[donor] = parts[donor][:-take]
        sizes[k] += take
        sizes[donor] -= take
    return parts


def _split_by_owner(owner, num_nodes):
    sizes = np.bincount(owner, minlength=num_nodes)
    return np.split(np.argsort(owner, kind="stable"), np.cumsum(sizes)[:-1])


def _dirichlet_owner(labels, num_nodes, alpha, rng):
    """Assign each sample a node, class by class, with Dirichlet proportions."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    owner = np.empty(len(labels), dtype=np.int64)
    for idx in np.split(order, np.cumsum(counts)[:-1]):
        p = np.nan_to_num(rng.dirichlet(np.full(num_nodes, alpha)))
        if p.sum() <= 0:  # extreme alpha underflow: one node takes the class
            p = np.eye(num_nodes)[rng.integers(num_nodes)]
        per_node = np.diff(np.round(np.cumsum(p / p.sum()) * len(idx)),
                           prepend=0).astype(np.int64)
        owner[rng.permutation(idx)] = np.repeat(np.arange(num_nodes), per_node)
    return owner


def _dirichlet(labels, num_nodes, alpha, rng):
    min_size = max(1, min(10, len(labels) // (2 * num_nodes)))
    for _ in range(20):
        owner = _dirichlet_owner(labels, num_nodes, alpha, rng)
        if np.bincount(owner, minlength=num_nodes).min() >= min_size:
            break
    return _top_up(_split_by_owner(owner, num_nodes), min_size)


def _shards(labels, num_nodes, per_node, rng):
    n_shards = num_nodes * per_node
    if n_shards > len(labels):
        raise DataError(f"shards:{per_node} needs {n_shards} shards but there "
                        f"are only {len(labels)} samples")
    perm = rng.permutation(len(labels))
    shards = np.array_split(perm[np.argsort(labels[perm], kind="stable")],
                            n_shards)
    deal = rng.permutation(n_shards).reshape(num_nodes, per_node)
    return [np.concatenate([shards[j] for j in row]) for row in deal]


def partition(labels: np.ndarray, num_nodes: int, spec: str = "iid", *,
              seed: int = 0, shares: list[float] | None = None
              ) -> list[np.ndarray]:
    """Split sample indices across nodes.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels of the training set, shape ``(N,)``.
    num_nodes : int
        Number of nodes, ``1 <= num_nodes <= N``.
    spec : str
        ``iid`` (random split), ``dirichlet:ALPHA`` (per-class Dirichlet
        proportions; small ALPHA is skewed), ``shards:S`` (label-sorted
        shards, S per node) or ``groups:K`` (iid data; labels are meant to be
        permuted per group, see :func:`group_label_permutations`).
    seed : int
        Seed of the split.
    shares : list of float, optional
        Relative node sizes for ``iid`` and ``groups``; default equal.

    Returns
    -------
    list of numpy.ndarray
        Sorted ``int64`` index arrays, one per node: disjoint, covering all
        samples, none empty.
    """
    kind, arg = _parse_spec(spec)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    if not isinstance(num_nodes, (int, np.integer)) or not 1 <= num_nodes <= n:
        raise DataError(f"bad number of nodes {num_nodes!r}; expected an "
                        f"integer in [1, {n}] (the number of samples)")
    if kind == "groups":
        partition_groups(num_nodes, arg)
    rng = np.random.default_rng(seed)
    if kind == "dirichlet":
        parts = _dirichlet(labels, num_nodes, arg, rng)
    elif kind == "shards":
        parts = _shards(labels, num_nodes, arg, rng)
    else:
        sizes = _sizes(n, num_nodes, shares)
        parts = _top_up(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]), 1)
    return [np.sort(p).astype(np.int64) for p in parts]


def partition_groups(num_nodes: int, num_groups: int) -> np.ndarray:
    """Group of each node for clustered FL: node ``i`` is in ``i % K``."""
    if not 1 <= num_groups <= num_nodes:
        raise DataError(f"bad number of groups {num_groups!r}; expected an "
                        f"integer in [1, {num_nodes}] (the number of nodes)")
    return np.arange(num_nodes) % num_groups


def group_label_permutations(num_classes: int, num_groups: int,
                             seed: int = 0) -> np.ndarray:
    """Label permutation of each group, shape ``(K, num_classes)``.

    Group 0 keeps the labels (identity); every other group gets a fixed
    random permutation that differs from the identity.
    """
    rng = np.random.default_rng(seed)
    perms = np.tile(np.arange(num_classes), (num_groups, 1))
    for g in range(1, num_groups):
        while num_classes > 1 and np.array_equal(perms[g], perms[0]):
            perms[g] = rng.permutation(num_classes)
    return perms


def apply_label_permutation(y: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Relabel: sample with label ``c`` gets label ``perm[c]``."""
    return np.asarray(perm, dtype=np.int64)[np.asarray(y, dtype=np.int64)]


def class_histogram(labels: np.ndarray, indices, num_classes: int) -> np.ndarray:
    """Per-class counts of ``labels[indices]``.

    ``indices`` may be one index array (result ``(C,)``) or a list of them,
    as returned by :func:`partition` (result ``(num_nodes, C)``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if isinstance(indices, (list, tuple)):
        return np.stack([class_histogram(labels, i, num_classes)
                         for i in indices])
    return np.bincount(labels[np.asarray(indices, dtype=np.int64)],
                       minlength=num_classes)
