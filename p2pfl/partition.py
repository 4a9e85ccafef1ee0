"""Partitioning of a training set across nodes.

Partition specs: ``iid``, ``dirichlet:ALPHA``, ``shards:S`` and ``groups:K``
(see :func:`partition`).  Everything public here is re-exported by
:mod:`p2pfl.data`.
"""

from __future__ import annotations

import numpy as np

from p2pfl.errors import DataError

__all__ = [
    "partition",
    "parse_partition",
    "partition_groups",
    "group_label_permutations",
    "apply_label_permutation",
    "class_histogram",
]

_SPECS = "iid, dirichlet:ALPHA, shards:S, groups:K"


def parse_partition(spec):
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
    """Assign each sample a node, class by class, with Dirichlet proportions (the
    classes present only: every number up to a label of 999,999 took 293 s, twenty
    times over, before any node started)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    counts = counts[counts > 0]
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
    kind, arg = parse_partition(spec)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    if not isinstance(num_nodes, (int, np.integer)) or not 1 <= num_nodes <= n:
        raise DataError(f"bad number of nodes {num_nodes!r}; expected an "
                        f"integer in [1, {n}] (the number of samples)")
    if kind == "groups":
        partition_groups(num_nodes, arg)
    if shares is not None and kind in ("dirichlet", "shards"):
        raise DataError(f"shares apply to the iid and groups partitions, not {spec}")
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
