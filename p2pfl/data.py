"""Datasets and their partitioning across nodes.

Every dataset comes from the local machine: it is bundled with a library
(``digits``), generated (``mnist1d``, ``synthetic``) or read from files the
user points at (``mnist:PATH``, ``cifar10:PATH``).  Nothing is downloaded.

The file readers (:func:`read_idx`, :func:`read_cifar10_batch`) live in
:mod:`p2pfl.datafiles` and the partition functions (:func:`partition`, ...)
in :mod:`p2pfl.partition`; both are re-exported here.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2pfl.atomic import write_atomic
from p2pfl.datafiles import _find_file, read_cifar10_batch, read_idx
from p2pfl.errors import DataError
from p2pfl.partition import (
    apply_label_permutation,
    class_histogram,
    group_label_permutations,
    partition,
    partition_groups,
)

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
DATASETS = ("digits", "mnist1d", "synthetic", "mnist", "cifar10", "npz")
_FORMS = ("digits, mnist1d[:SAMPLES], synthetic[:CLASSES:DIM], mnist:PATH, cifar10:PATH, "
          "npz:FILE")
#: The arrays a dataset of one's own (``npz:FILE``) holds.
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
#: The most classes its labels may make (a stray label of 10**9 asked the model for
#: 10**9 outputs).
MAX_CLASSES = 1_000_000


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held in memory.

    Attributes
    ----------
    name : str
        The spec the dataset was loaded from.
    x_train, x_test : numpy.ndarray
        ``float32`` features of shape ``(N, *input_shape)``: standardised with the
        training split's statistics, except ``digits``, whose pixel values 0–16 are
        divided by 16.
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
    """Build a :class:`Dataset` with canonical dtypes, refusing what would fail in a
    node: an empty split, labels outside ``[0, num_classes)``, training labels of one
    class, or test samples of another shape than the training samples."""
    for split, x, y in (("training", x_tr, np.asarray(y_tr)), ("test", x_te, np.asarray(y_te))):
        if len(x) == 0:
            raise DataError(f"dataset {name!r}: the {split} split is empty")
        if y.dtype.kind not in "iu":
            raise DataError(f"dataset {name!r}: {split} labels are {y.dtype}, not integers")
        if y.min() < 0 or y.max() >= num_classes:
            raise DataError(f"dataset {name!r}: {split} labels range over [{y.min()}, "
                            f"{y.max()}], outside [0, {num_classes})")
    if len(np.unique(np.asarray(y_tr))) < 2:  # a model of one class: loss 0, accuracy 1
        raise DataError(f"dataset {name!r}: the training labels hold one class "
                        f"({np.asarray(y_tr).flat[0]}); a classifier needs at least two")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"dataset {name!r}: training samples are {tuple(x_tr.shape[1:])}, "
                        f"test samples {tuple(x_te.shape[1:])}")
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


def _digits_arrays(cache_dir):
    """scikit-learn's bundled 8×8 digits (1,797 images), read once through
    scikit-learn and cached as ``.npz``: importing scikit-learn costs about
    1.5 s, more than a small run takes."""
    path = _cache_dir(cache_dir) / "digits-v1.npz"
    arrays = _read_npz(path, {"data": (1797, 64), "target": (1797,)})
    if arrays is not None:
        return arrays
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn: "
                        "pip install scikit-learn") from None
    bunch = load_digits()
    arrays = {"data": np.asarray(bunch.data), "target": np.asarray(bunch.target)}
    _write_npz(path, arrays)
    return arrays


def _load_digits(seed, cache_dir=None):
    a = _digits_arrays(cache_dir)
    x = (a["data"].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = a["target"].astype(np.int64)
    tr, te = _stratified_split(y, 0.2, seed)
    return _make("digits", x[tr], y[tr], x[te], y[te], 10)


def _read_npz(path, shapes):
    """The arrays of a cached ``.npz``, or None when it is missing, corrupt, or has
    other shapes than ``shapes`` (key: shape)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in shapes}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None  # corrupt cache: make it again
    if any(arrays[key].shape != shape for key, shape in shapes.items()):
        return None  # not the arrays this version writes: make them again
    return arrays


def _write_npz(path, arrays) -> None:
    """Write an ``.npz`` atomically (a cache: failing to write it is no error)."""
    try:
        write_atomic(path, lambda fh: np.savez(fh, **arrays))
    except OSError:
        pass  # an unwritable cache only costs the time to make the arrays again


def _cache_dir(cache_dir):
    if cache_dir is None:
        cache_dir = os.environ.get("P2PFL_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "p2pfl")
    return Path(cache_dir)


def _mnist1d_arrays(cache_dir, samples: int = 5000):
    """MNIST-1D arrays from its generator (seed 42), made once and cached as ``.npz``.

    ``samples`` is the generator's ``num_samples`` (train and test together, split
    80/20); 5,000 is the standard dataset."""
    path = _cache_dir(cache_dir) / f"mnist1d-v2-{samples}-42.npz"
    made = 10 * (samples // 10)  # the generator makes as many of each of the 10 classes
    n_train = int(made * 0.8)  # its train_split
    keys = {"x": (n_train, 40), "y": (n_train,),
            "x_test": (made - n_train, 40), "y_test": (made - n_train,)}
    arrays = _read_npz(path, keys)
    if arrays is not None:
        return arrays
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("dataset 'mnist1d' needs the mnist1d package: "
                        "pip install mnist1d") from None
    args = get_dataset_args()
    args.num_samples = samples
    raw = make_dataset(args)
    arrays = {k: np.asarray(raw[k]) for k in keys}
    _write_npz(path, arrays)
    return arrays


def _load_mnist1d(arg, cache_dir):
    samples = _int_arg(arg, "SAMPLES", 100, 1_000_000, f"mnist1d:{arg}") if arg else 5000
    a = _mnist1d_arrays(cache_dir, samples)
    x_tr, x_te = _standardise(a["x"].astype(np.float32),
                              a["x_test"].astype(np.float32), axis=None)
    name = "mnist1d" if not arg else f"mnist1d:{samples}"
    return _make(name, x_tr[:, None, :], a["y"], x_te[:, None, :], a["y_test"], 10)


def _int_arg(text, what, lo, hi, spec):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise DataError(f"bad {what} {text!r} in dataset {spec!r}; "
                        f"expected an integer in [{lo}, {hi}]")
    return value


def _load_synthetic(arg, seed):
    """Gaussian classes: unit-variance blobs around random class means."""
    parts = arg.split(":") if arg else []
    if len(parts) not in (0, 2):
        raise DataError(f"bad synthetic spec 'synthetic:{arg}'; "
                        "expected synthetic or synthetic:CLASSES:DIM")
    classes = _int_arg(parts[0], "CLASSES", 2, 1000, f"synthetic:{arg}") if parts else 10
    dim = _int_arg(parts[1], "DIM", 1, 100000, f"synthetic:{arg}") if parts else 32
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (classes, dim))
    means *= 3.4 / np.linalg.norm(means, axis=1, keepdims=True)
    n_tr, n_te = 3000, 1000
    y = rng.integers(0, classes, n_tr + n_te)
    x = means[y] + rng.normal(0.0, 1.0, (n_tr + n_te, dim))
    x_tr, x_te = _standardise(x[:n_tr], x[n_tr:], axis=0)
    name = f"synthetic:{classes}:{dim}"
    return _make(name, x_tr, y[:n_tr], x_te, y[n_tr:], classes)


# ---------------------------------------------------------------- file datasets


def _check_features(x, what: str) -> None:
    """Refuse features a node would fail on: none (a dimension of 0), or NaN or infinite
    values (also values beyond float32's range, which become infinite)."""
    if 0 in x.shape[1:]:
        raise DataError(f"{what} has no features, shape {x.shape}")
    with np.errstate(over="ignore"):  # beyond float32's range: inf, refused here
        finite = x.dtype.kind != "f" or np.isfinite(x.astype(np.float32)).all()
    if not finite:
        raise DataError(f"{what} holds NaN or infinite values "
                        "(or values beyond float32's range)")


def _check_classes(top: int, what: str) -> None:
    """Refuse a largest label that would ask the model for more than MAX_CLASSES outputs."""
    if top >= MAX_CLASSES:
        raise DataError(f"{what}: labels run up to {top}, which makes {top + 1} "
                        f"classes (at most {MAX_CLASSES:,}); number the classes from 0")


def _mnist_split(folder, stem):
    x = read_idx(_find_file(folder, [f"{stem}-images-idx3-ubyte",
                                     f"{stem}-images.idx3-ubyte"]))
    y = read_idx(_find_file(folder, [f"{stem}-labels-idx1-ubyte",
                                     f"{stem}-labels.idx1-ubyte"]))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"MNIST {stem} files in {str(folder)!r} disagree: "
                        f"images {x.shape}, labels {y.shape}")
    if len(x) == 0:
        raise DataError(f"MNIST {stem} files in {str(folder)!r} hold no images")
    if y.dtype.kind not in "iu":
        raise DataError(f"MNIST {stem} labels in {str(folder)!r} are {y.dtype}, not integers")
    _check_features(x, f"the MNIST {stem}-images file in {str(folder)!r}")
    return x, y.astype(np.int64)


def _load_mnist(folder):
    """MNIST-format IDX files (also works for Fashion-MNIST, KMNIST)."""
    x_tr, y_tr = _mnist_split(folder, "train")
    x_te, y_te = _mnist_split(folder, "t10k")
    x_tr, x_te = _standardise(x_tr[:, None].astype(np.float32) / 255.0,
                              x_te[:, None].astype(np.float32) / 255.0,
                              axis=(0, 2, 3))
    top = int(max(y_tr.max(), y_te.max()))  # a negative label is refused by _make
    _check_classes(top, f"MNIST files in {str(folder)!r}")
    num_classes = top + 1
    return _make(f"mnist:{folder}", x_tr, y_tr, x_te, y_te, num_classes)


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


def _load_npz(text):
    """A dataset of one's own: a NumPy ``.npz`` holding ``x_train``, ``y_train``,
    ``x_test`` and ``y_test`` (:data:`NPZ_ARRAYS`).  Features are taken as they are (as
    float32: no standardisation), of shape ``(N, ...)``: ``(N, D)`` for ``mlp`` and
    ``logreg``, ``(N, C, L)`` or ``(N, C, H, W)`` for ``cnn``.  Labels are integers
    from 0; the classes number the largest label plus one.  Object arrays are refused
    (``allow_pickle=False``): the file is data, never code."""
    if not text:
        raise DataError("dataset 'npz' needs a file: npz:FILE")
    path = Path(text).expanduser()
    try:
        with open(path, "rb") as fh:  # else numpy reads any other file as a pickle, and
            magic = fh.read(6)  # says to load it unsafely
        if magic.startswith(b"\x93NUMPY"):
            raise DataError(f"{text!r} is one array (.npy), not an .npz of "
                            f"{', '.join(NPZ_ARRAYS)}")
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip, or an empty one
            raise DataError(f"{text!r} is not an .npz file (a zip archive of the arrays "
                            f"{', '.join(NPZ_ARRAYS)}, as numpy.savez writes)")
        npz = np.load(path, allow_pickle=False)
        with npz:
            arrays = {k: npz[k] for k in NPZ_ARRAYS if k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        if isinstance(exc, DataError):  # MemoryError: an array's header claims terabytes
            raise
        raise DataError(f"cannot read npz file {text!r}: {exc}") from None
    missing = [k for k in NPZ_ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"npz file {text!r} lacks {', '.join(missing)} (it needs "
                        f"{', '.join(NPZ_ARRAYS)})")
    for split in ("train", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if x.ndim < 2 or x.dtype.kind not in "biuf":
            raise DataError(f"npz file {text!r}: x_{split} must be numbers of shape (N, "
                            f"...), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"npz file {text!r}: y_{split} must hold one label per sample "
                            f"of x_{split} ({len(x)}), got shape {y.shape}")
        _check_features(x, f"npz file {text!r}: x_{split}")
        if len(y) == 0 or y.dtype.kind not in "iu":
            raise DataError(f"npz file {text!r}: y_{split} must be integer labels, one or "
                            f"more, got {y.dtype} {y.shape}")
    y_tr, y_te = arrays["y_train"], arrays["y_test"]
    top = int(max(y_tr.max(), y_te.max()))  # a negative label is refused by _make
    _check_classes(top, f"npz file {text!r}")
    return _make(f"npz:{text}", arrays["x_train"], y_tr, arrays["x_test"], y_te, top + 1)


# ---------------------------------------------------------------- entry point


def _folder(kind, arg, data_dir):
    text = arg or data_dir
    if not text:
        raise DataError(f"dataset {kind!r} needs a folder: {kind}:PATH")
    folder = Path(text).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{kind} folder {str(folder)!r} {what}")
    return folder


def load_dataset(name: str, *, seed: int = 0, data_dir: str | None = None,
                 cache_dir: str | None = None) -> Dataset:
    """Load a dataset by spec.

    Parameters
    ----------
    name : str
        One of ``digits``, ``mnist1d[:SAMPLES]``, ``synthetic[:CLASSES:DIM]``,
        ``mnist:PATH``, ``cifar10:PATH`` or ``npz:FILE`` (arrays of one's own).
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
        return _load_digits(seed, cache_dir)
    if kind == "mnist1d":
        return _load_mnist1d(arg, cache_dir)
    if kind == "synthetic":
        return _load_synthetic(arg, seed)
    if kind == "mnist":
        return _load_mnist(_folder(kind, arg, data_dir))
    if kind == "cifar10":
        return _load_cifar10(_folder(kind, arg, data_dir))
    if kind == "npz":
        return _load_npz(arg)
    raise DataError(f"unknown dataset {name!r}; valid: {_FORMS}")
