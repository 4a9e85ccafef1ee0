"""Tests for p2pfl.data: loaders, file readers and partitions."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from p2pfl.data import (
    DATASETS,
    Dataset,
    apply_label_permutation,
    class_histogram,
    group_label_permutations,
    load_dataset,
    partition,
    partition_groups,
    read_cifar10_batch,
    read_idx,
)
from p2pfl.errors import DataError

torch.set_num_threads(1)


# ---------------------------------------------------------------- loaders


def test_registry_lists_all_kinds():
    assert set(DATASETS) == {"digits", "mnist1d", "synthetic", "mnist", "cifar10", "npz"}


def test_digits_shapes_and_split():
    ds = load_dataset("digits", seed=3)
    assert isinstance(ds, Dataset)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert abs(len(ds.x_test) / 1797 - 0.2) < 0.01
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # stratified: every class present in test in about the same proportion
    frac = np.bincount(ds.y_test, minlength=10) / np.bincount(
        np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(frac - 0.2) < 0.02)
    same = load_dataset("digits", seed=3)
    assert np.array_equal(same.y_test, ds.y_test)
    other = load_dataset("digits", seed=4)
    assert not np.array_equal(other.y_test, ds.y_test)


def test_synthetic_deterministic_and_shaped():
    a = load_dataset("synthetic", seed=1)
    b = load_dataset("synthetic", seed=1)
    c = load_dataset("synthetic", seed=2)
    assert a.input_shape == (32,) and a.num_classes == 10
    assert a.x_train.shape == (3000, 32) and a.x_test.shape == (1000, 32)
    assert np.array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    d = load_dataset("synthetic:4:7")
    assert d.num_classes == 4 and d.input_shape == (7,)
    assert d.y_train.max() == 3


def test_mnist1d_generated_then_cached(tmp_path, monkeypatch):
    pytest.importorskip("mnist1d")
    ds = load_dataset("mnist1d", cache_dir=str(tmp_path))
    assert ds.input_shape == (1, 40) and ds.num_classes == 10
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    # the second load must come from the cache, not the generator
    import mnist1d.data
    monkeypatch.setattr(mnist1d.data, "make_dataset",
                        lambda *a, **k: pytest.fail("cache not reused"))
    again = load_dataset("mnist1d", cache_dir=str(tmp_path))
    assert np.array_equal(again.x_train, ds.x_train)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    pytest.importorskip("mnist1d")
    monkeypatch.setenv("P2PFL_CACHE", str(tmp_path / "env"))
    load_dataset("mnist1d")
    assert len(list((tmp_path / "env").glob("*.npz"))) == 1


@pytest.mark.parametrize("name", ["imagenet", "digits:5", "synthetic:x:3",
                                  "synthetic:3", "mnist1d:2"])
def test_unknown_or_bad_dataset(name):
    with pytest.raises(DataError, match="digits|synthetic|mnist1d"):
        load_dataset(name)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="needs a folder"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="train-images"):
        load_dataset(f"mnist:{tmp_path}")



def test_mnist1d_sizes_have_their_own_cache_files(tmp_path):
    """mnist1d:4000 once shared the standard set's cache file: whichever ran first
    decided what the other loaded."""
    pytest.importorskip("mnist1d")
    small = load_dataset("mnist1d:4000", cache_dir=str(tmp_path))
    standard = load_dataset("mnist1d", cache_dir=str(tmp_path))
    assert small.x_train.shape == (3200, 1, 40) and small.x_test.shape == (800, 1, 40)
    assert standard.x_train.shape == (4000, 1, 40) and standard.x_test.shape == (1000, 1, 40)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_an_odd_mnist1d_size_is_cached_too(tmp_path, monkeypatch):
    """The generator makes 10·(SAMPLES // 10) samples: the cache of mnist1d:105 never
    passed its shape check and was made again on every load."""
    pytest.importorskip("mnist1d")
    first = load_dataset("mnist1d:105", cache_dir=str(tmp_path))
    import mnist1d.data
    monkeypatch.setattr(mnist1d.data, "make_dataset",
                        lambda *a, **k: pytest.fail("cache not reused"))
    assert np.array_equal(load_dataset("mnist1d:105", cache_dir=str(tmp_path)).x_train,
                          first.x_train)


@pytest.mark.parametrize("damage", ["truncate", "flip", "shape"])
def test_damaged_cache_is_made_again(tmp_path, damage):
    """A truncated or corrupted cache raised zipfile.BadZipFile; one of other shapes
    was used as the dataset."""
    pytest.importorskip("mnist1d")
    good = load_dataset("mnist1d:200", cache_dir=str(tmp_path))
    (path,) = tmp_path.glob("*.npz")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:200] + bytes(b ^ 0xFF for b in raw[200:400]) + raw[400:])
    else:
        np.savez(path, x=np.zeros((30, 40)), y=np.zeros(30, np.int64),
                 x_test=np.zeros((5, 40)), y_test=np.zeros(5, np.int64))
    again = load_dataset("mnist1d:200", cache_dir=str(tmp_path))
    assert np.array_equal(again.x_train, good.x_train)
    assert np.array_equal(again.y_test, good.y_test)

# ---------------------------------------------------------------- IDX


def _idx_bytes(arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data, gz=False):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    labels = np.array([0, 1, 2, 1, 0], np.uint8)
    suffix = ".gz" if gz else ""
    p_img = _write(tmp_path / f"img{suffix}", _idx_bytes(images), gz)
    p_lab = _write(tmp_path / f"lab{suffix}", _idx_bytes(labels), gz)
    assert np.array_equal(read_idx(p_img), images)
    assert np.array_equal(read_idx(p_lab), labels)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([[1, -2], [70000, 3]], np.int32)
    path = _write(tmp_path / "ints", _idx_bytes(values.astype(">i4"), 0x0C))
    out = read_idx(path)
    assert np.array_equal(out, values) and out.dtype.isnative


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "dtype code"),
    (lambda b: b[:-3], "does not match"),
    (lambda b: b + b"\x00", "does not match"),
    (lambda b: b[:6], "truncated"),
])
def test_read_idx_malformed(tmp_path, mutate, message):
    good = _idx_bytes(np.zeros((5, 4, 4), np.uint8))
    path = _write(tmp_path / "bad", mutate(good))
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_read_idx_bad_gzip(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(_write(tmp_path / "x.gz", b"not gzip at all"))


def test_mnist_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n, gz in (("train", 12, True), ("t10k", 6, False)):
        x = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        _write(tmp_path / f"{stem}-images-idx3-ubyte{ext}", _idx_bytes(x), gz)
        _write(tmp_path / f"{stem}-labels-idx1-ubyte{ext}", _idx_bytes(y), gz)
    ds = load_dataset(f"mnist:{tmp_path}")
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.shape == (12, 1, 28, 28) and len(ds.y_test) == 6
    assert abs(float(ds.x_train.mean())) < 1e-4
    via_dir = load_dataset("mnist", data_dir=str(tmp_path))
    assert np.array_equal(via_dir.x_test, ds.x_test)



def _mnist_folder(folder, train=(12, 28), test=(6, 28), labels=None, label_code=0x08):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, (n, side) in (("train", train), ("t10k", test)):
        x = rng.integers(0, 256, (n, side, side)).astype(np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8) if labels is None else labels[stem]
        _write(folder / f"{stem}-images-idx3-ubyte", _idx_bytes(x))
        _write(folder / f"{stem}-labels-idx1-ubyte", _idx_bytes(y, label_code))
    return folder


@pytest.mark.parametrize("case, message", [
    ("empty", "no images"),
    ("test_size", "test samples"),
    ("negative", "outside"),
    ("float", "not integers"),
])
def test_mnist_folder_refuses_what_a_node_would_fail_on(tmp_path, case, message):
    """Each of these passed the loader, then failed inside the nodes (or with a
    traceback): an empty split, test images of another size, labels below 0 or of a
    float type."""
    if case == "empty":
        folder = _mnist_folder(tmp_path / "m", train=(0, 28))
    elif case == "test_size":
        folder = _mnist_folder(tmp_path / "m", test=(6, 14))
    elif case == "negative":
        labels = {"train": np.array([0, 1, -1, 2], np.int8), "t10k": np.arange(6, dtype=np.int8)}
        folder = _mnist_folder(tmp_path / "m", train=(4, 28), labels=labels, label_code=0x09)
    else:
        labels = {"train": np.arange(12, dtype=">f4"), "t10k": np.arange(6, dtype=">f4")}
        folder = _mnist_folder(tmp_path / "m", labels=labels, label_code=0x0D)
    with pytest.raises(DataError, match=message):
        load_dataset(f"mnist:{folder}")


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"),
    ("no_pixels", "no features"),
    ("classes", "5000000 classes"),
])
def test_mnist_folder_refuses_what_npz_refuses(tmp_path, case, message):
    """IDX files may hold float images and int32 labels: NaN or infinite pixels, images
    of no pixels and a label of 4,999,999 passed the loader (npz refused them), and the
    run trained on NaN, or built a model of 5 M outputs (27 GB, no record written)."""
    folder = _mnist_folder(tmp_path / "m")
    if case == "classes":
        labels = np.arange(12, dtype=np.int32)
        labels[0] = 4_999_999
        _write(folder / "train-labels-idx1-ubyte", _idx_bytes(labels, 0x0C))
    else:
        shape = (12, 0, 0) if case == "no_pixels" else (12, 28, 28)
        fill = {"nan": np.nan, "inf": np.inf}.get(case, 0)
        _write(folder / "train-images-idx3-ubyte",
               _idx_bytes(np.full(shape, fill, np.float32), 0x0D))
    with pytest.raises(DataError, match=message):
        load_dataset(f"mnist:{folder}")


# ---------------------------------------------------------------- CIFAR-10


def _cifar_batch(n, seed, protocol=4):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return pickle.dumps({b"batch_label": b"x", b"data": data,
                         b"labels": labels}, protocol=protocol), data, labels


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_cifar10_batch(tmp_path, protocol):
    raw, data, labels = _cifar_batch(4, 0, protocol)
    x, y = read_cifar10_batch(_write(tmp_path / "data_batch_1", raw))
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x.reshape(4, -1), data)
    assert y.dtype == np.int64 and y.tolist() == labels


def _py2_batch():
    """Hand-assembled pickle shaped like the real (Python 2 written) files."""
    def s(b):
        return b"U" + bytes([len(b)]) + b
    return (b"\x80\x02}q\x00(" + s(b"data")
            + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            + b"K\x00\x85" + s(b"b") + b"\x87R(K\x01K\x02M\x00\x0c\x86"
            + b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|")
            + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T\x00\x18\x00\x00"
            + bytes(range(256)) * 24 + b"tb" + s(b"labels") + b"]q\x01(K\x03K\x07eu.")


def test_read_cifar10_python2_format(tmp_path):
    x, y = read_cifar10_batch(_write(tmp_path / "test_batch", _py2_batch()))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 7]
    assert np.array_equal(x.reshape(-1), np.tile(np.arange(256, dtype=np.uint8), 24))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_hostile_pickle_rejected(tmp_path):
    raw = pickle.dumps({b"data": _Evil(), b"labels": [0]})
    with pytest.raises(DataError, match="not allowed"):
        read_cifar10_batch(_write(tmp_path / "evil", raw))


@pytest.mark.parametrize("obj", [
    [1, 2, 3],
    {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
    {b"labels": [0]},
])
def test_cifar10_wrong_content(tmp_path, obj):
    with pytest.raises(DataError):
        read_cifar10_batch(_write(tmp_path / "b", pickle.dumps(obj)))


def test_cifar10_folder_loader(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write(folder / f"data_batch_{i}", _cifar_batch(3, i)[0])
    _write(folder / "test_batch", _cifar_batch(2, 9)[0])
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert np.allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-4)


def test_cifar10_label_out_of_range_is_refused(tmp_path):
    """A label of 10 passed the loader and failed in a node, and the run exited 0."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write(folder / f"data_batch_{i}", _cifar_batch(3, i)[0])
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}
    _write(folder / "test_batch", pickle.dumps(bad))
    with pytest.raises(DataError, match=r"\[3, 10\], outside \[0, 10\)"):
        load_dataset(f"cifar10:{tmp_path}")


# ---------------------------------------------------------------- partitions


def _labels(n=1000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def _assert_disjoint_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "dirichlet:0.01",
                                  "shards:2", "groups:3"])
def test_partitions_disjoint_and_covering(spec):
    y = _labels()
    parts = partition(y, 7, spec, seed=1)
    assert len(parts) == 7
    _assert_disjoint_cover(parts, len(y))
    again = partition(y, 7, spec, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_iid_sizes_equal_and_with_shares():
    y = _labels(1000)
    assert sorted(len(p) for p in partition(y, 3)) == [333, 333, 334]
    parts = partition(y, 3, "iid", shares=[1, 2, 7])
    assert [len(p) for p in parts] == [100, 200, 700]
    tiny = partition(y[:3], 3, "iid", shares=[100, 1, 1])
    _assert_disjoint_cover(tiny, 3)


def _mean_entropy(y, parts):
    h = class_histogram(y, parts, 10).astype(float)
    p = h / h.sum(1, keepdims=True)
    return float(-(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(1).mean())


def test_dirichlet_small_alpha_is_skewed():
    y = _labels(2000)
    iid = _mean_entropy(y, partition(y, 10, "iid"))
    skewed_parts = partition(y, 10, "dirichlet:0.1", seed=2)
    assert _mean_entropy(y, skewed_parts) < iid - 0.8
    assert min(len(p) for p in skewed_parts) >= 10


def test_dirichlet_many_nodes_tiny_alpha_nonempty():
    y = _labels(300)
    parts = partition(y, 100, "dirichlet:0.001", seed=0)
    _assert_disjoint_cover(parts, 300)


def test_dirichlet_draws_for_the_classes_present_only():
    """Labels 0, 1 and 999,999: it drew a Dirichlet sample for every number up to the
    largest label, twenty times over (293 s before any node started)."""
    import time

    y = np.array([0, 1, 999_999] * 20)
    t0 = time.monotonic()
    parts = partition(y, 3, "dirichlet:0.5", seed=0)
    assert time.monotonic() - t0 < 5
    _assert_disjoint_cover(parts, 60)
    # where every class is present, the partition is the one it always was
    assert [sorted(p.tolist())[:4] for p in partition(_labels(300), 4, "dirichlet:0.5",
                                                      seed=1)] == [
        [0, 1, 5, 7], [3, 20, 28, 29], [2, 4, 6, 11], [8, 12, 15, 21]]  # as at aa77006


def test_shards_limit_classes_per_node():
    y = np.repeat(np.arange(10), 100)
    parts = partition(y, 10, "shards:2", seed=0)
    classes = [len(np.unique(y[p])) for p in parts]
    assert max(classes) <= 2
    with pytest.raises(DataError, match="shards"):
        partition(y[:10], 10, "shards:2")


@pytest.mark.parametrize("spec", ["", "iid:2", "dirichlet", "dirichlet:0",
                                  "dirichlet:-1", "dirichlet:nan", "shards:0",
                                  "shards:x", "groups:0", "random"])
def test_bad_partition_specs(spec):
    with pytest.raises(DataError, match="iid, dirichlet:ALPHA"):
        partition(_labels(), 4, spec)


def test_bad_nodes_shares_and_groups():
    y = _labels(20)
    for nodes in (0, 21, 2.5):
        with pytest.raises(DataError, match="number of nodes"):
            partition(y, nodes)
    with pytest.raises(DataError, match="shares"):
        partition(y, 3, shares=[1, 2])
    with pytest.raises(DataError, match="shares"):
        partition(y, 2, shares=[1, 0])
    with pytest.raises(DataError, match="groups"):
        partition(y, 3, "groups:4")


def test_groups_and_label_permutations():
    assert partition_groups(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    perms = group_label_permutations(10, 4, seed=5)
    assert perms.shape == (4, 10)
    assert np.array_equal(perms[0], np.arange(10))
    assert all(np.array_equal(np.sort(p), np.arange(10)) for p in perms)
    assert not any(np.array_equal(p, np.arange(10)) for p in perms[1:])
    assert np.array_equal(perms, group_label_permutations(10, 4, seed=5))
    y = np.array([0, 3, 9])
    assert apply_label_permutation(y, perms[1]).tolist() == perms[1][y].tolist()


def test_class_histogram():
    y = np.array([0, 1, 1, 2, 2, 2])
    assert class_histogram(y, np.arange(6), 4).tolist() == [1, 2, 3, 0]
    h = class_histogram(y, [np.array([0, 1]), np.array([3, 4, 5])], 3)
    assert h.tolist() == [[1, 1, 0], [0, 0, 3]]


# ---------------------------------------------------------------- npz: data of one's own


def _npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = {"x_train": rng.normal(size=(40, 6)).astype(np.float32),
            "y_train": np.arange(40) % 3, "x_test": rng.normal(size=(9, 6)),
            "y_test": np.arange(9) % 3}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


def test_npz_arrays_of_ones_own_load_as_they_are(tmp_path):
    spec = _npz(tmp_path / "mine.npz", x_train=np.arange(80, dtype=np.int16).reshape(40, 2),
                x_test=np.ones((9, 2)), y_test=np.array([0, 1, 2, 3, 3, 3, 3, 3, 3]))
    ds = load_dataset(spec)
    assert ds.input_shape == (2,) and ds.num_classes == 4  # the largest label, 3, plus one
    assert ds.x_train.dtype == np.float32 and ds.x_train[39, 1] == 79  # not standardised
    assert ds.y_train.dtype == np.int64 and list(ds.y_test[:4]) == [0, 1, 2, 3]


@pytest.mark.parametrize("arrays, message", [
    ({"y_test": None}, "lacks y_test"),
    ({"x_train": np.array(["a", "b"], dtype=object)}, "cannot read npz"),  # pickled
    ({"x_train": np.ones(40)}, "x_train must be numbers of shape"),
    ({"x_test": np.array([["a"]] * 9)}, "x_test must be numbers"),
    ({"y_train": np.zeros(39, int)}, "one label per sample of x_train"),
    ({"y_test": np.zeros(9)}, "y_test must be integer labels"),
    ({"x_train": np.full((40, 6), np.nan)}, "NaN or infinite"),
    ({"y_train": np.arange(40) - 1}, "outside"),
    ({"x_test": np.ones((9, 5))}, "training samples are"),
    ({"x_test": np.ones((0, 6)), "y_test": np.zeros(0, int)}, "y_test must be integer labels"),
    ({"y_train": np.r_[np.zeros(39, int), 10**9]}, "1000000001 classes"),
    ({"x_train": np.full((40, 6), 1e300)}, "beyond float32"),  # inf once float32
    ({"x_train": np.ones((40, 0)), "x_test": np.ones((9, 0))}, "no features"),
    # one class: a 1-output model had loss 0 and accuracy 1.0 every round
    ({"y_train": np.zeros(40, int), "y_test": np.zeros(9, int)}, "hold one class \\(0\\)"),
    ({"y_train": np.full(40, 2)}, "hold one class \\(2\\); a classifier needs at least two"),
])
def test_npz_files_a_node_would_fail_on_are_refused(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_dataset(_npz(tmp_path / "bad.npz", **arrays))


def test_npz_that_is_missing_or_not_a_zip_is_refused(tmp_path):
    with pytest.raises(DataError, match="needs a file"):
        load_dataset("npz")
    with pytest.raises(DataError, match="cannot read npz file"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="is not an .npz file") as info:
        load_dataset(f"npz:{tmp_path / 'text.npz'}")
    assert "pickle" not in str(info.value)  # numpy's advice to load it unsafely is not ours
    (tmp_path / "pk.npz").write_bytes(b"PKnot a zip at all")  # the prefix alone is not one
    with pytest.raises(DataError, match="is not an .npz file"):
        load_dataset(f"npz:{tmp_path / 'pk.npz'}")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(DataError, match="one array"):
        load_dataset(f"npz:{tmp_path / 'one.npy'}")
    whole = (tmp_path / "good.npz")
    _npz(whole)
    (tmp_path / "cut.npz").write_bytes(whole.read_bytes()[:-40])  # a truncated file
    raw = bytearray(whole.read_bytes())
    at = raw.index(b"NUMPY") + 200  # inside the first array's data
    raw[at] ^= 0xFF  # a bad CRC
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    for name in ("cut.npz", "crc.npz"):
        with pytest.raises(DataError, match="cannot read npz file"):
            load_dataset(f"npz:{tmp_path / name}")


def test_npz_whose_array_header_claims_terabytes_is_refused(tmp_path):
    """numpy allocates what an array's header says before it reads the data: a 1 KB file
    claiming (10**11, 8) float64 was a MemoryError traceback, exit 1."""
    import zipfile

    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 8), }"
    header = header.ljust(117) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    with zipfile.ZipFile(tmp_path / "claim.npz", "w") as z:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{name}.npy", npy + bytes(64))
    with pytest.raises(DataError, match="cannot read npz file"):
        load_dataset(f"npz:{tmp_path / 'claim.npz'}")


@pytest.mark.parametrize("spec", ["dirichlet:0.5", "shards:2"])
def test_shares_with_a_partition_that_sizes_nodes_itself_are_refused(spec):
    from p2pfl.partition import partition

    labels = np.arange(100) % 10
    assert len(partition(labels, 4, spec, shares=None)) == 4
    with pytest.raises(DataError, match="shares apply to the iid and groups partitions"):
        partition(labels, 4, spec, shares=[2, 1, 1, 1])
