"""Split a dataset over devices: iid, label shards, Dirichlet label skew, or natural users."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.data.datasets import Dataset
from fedsim.data.partition_natural import group as _group
from fedsim.data.partition_natural import natural
from fedsim.errors import InputError

PARTITION_KINDS: tuple[str, ...] = ("iid", "shards", "dirichlet", "natural")
_PARAMS: dict[str, Any] = {
    "shards_per_device": 2, "alpha": 0.5, "test_per_device": None,
    "train_per_device": None, "balanced_test": False,
}  # fmt: skip


@dataclass(frozen=True)
class DevicePartition:
    """One device's share of a dataset.

    Attributes
    ----------
    train_idx : np.ndarray
        Sorted int64 indices into ``dataset.x_train``.
    test_idx : np.ndarray
        Sorted int64 indices into ``dataset.x_test``.
    shared_idx : np.ndarray
        The training-set rows the cloud sent the device (data sharing,
        :mod:`fedsim.data.sharing`; in ``train_idx`` unless ``data.sharing.train`` is
        false); empty without sharing.
    """

    train_idx: np.ndarray
    test_idx: np.ndarray
    shared_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def partition(
    dataset: Dataset, num_devices: int, kind: str, rng: np.random.Generator, **params: Any
) -> list[DevicePartition]:
    """Split ``dataset`` over ``num_devices`` devices.

    Kinds
    -----
    ``iid``
        Shuffle train and test and split each into near-equal parts.
    ``shards``
        McMahan et al. / MTFL: sort train by label, cut it into
        ``shards_per_device * num_devices`` near-equal shards, give each device
        ``shards_per_device`` random shards. The test set follows the same label
        assignment: each class's test samples are shared among the devices in
        proportion to how many train samples of that class they hold. This is MTFL's
        "sort test by label, give each device the same shard indices" made exact at
        class boundaries, so a device's test labels are always a subset of its
        train labels. Train and test splits are disjoint and cover the whole sets.
    ``dirichlet``
        For each class, proportions over devices ~ Dir(``alpha``); class counts are
        drawn multinomially. A device left with no train sample takes one from the
        device holding the most. Test: with ``test_per_device`` given, each device
        gets that many test samples drawn with its train label distribution (no
        repeats within a device unless a class has fewer test samples than needed;
        devices may share test samples); otherwise each class's test samples are
        shared disjointly in proportion to the devices' train counts of that class,
        and a device whose share rounds to zero gets one random test sample of its
        most common train class (the only case where test splits overlap).
    ``natural``
        One device per user (``dataset.users_train``/``users_test``), users in
        ascending id order; ``num_devices`` must equal the number of users. With
        ``train_per_device`` / ``test_per_device`` each device keeps a random sample of
        that many of its user's train / test rows, the test rows as class-balanced as the
        user's rows allow with ``balanced_test`` (fedsim/data/partition_natural.py); a user
        with fewer rows is an error naming it. Without them nothing is drawn.

    Parameters
    ----------
    dataset : Dataset
        The dataset.
    num_devices : int
        Number of devices.
    kind : str
        One of ``iid``, ``shards``, ``dirichlet``, ``natural``.
    rng : np.random.Generator
        The only source of randomness; the same state gives the same partition.
    **params
        ``shards_per_device`` (2), ``alpha`` (0.5), ``test_per_device`` (None; dirichlet
        and natural), ``train_per_device`` (None) and ``balanced_test`` (False; natural
        only). Each kind uses only its own; the others are accepted and ignored so a whole
        partition spec can be passed.

    Returns
    -------
    list of DevicePartition
        One per device, in device order.

    Raises
    ------
    InputError
        For an unknown kind or parameter, a bad value, or when some device would get
        no train or no test sample (the message says why).
    """
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise InputError(
            f"data.partition: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(_PARAMS)}"
        )
    if kind not in PARTITION_KINDS:
        raise InputError(
            f"data.partition.kind: unknown kind {kind!r}; expected one of "
            f"{', '.join(PARTITION_KINDS)}"
        )
    opts = {**_PARAMS, **params}
    if not isinstance(num_devices, int) or num_devices < 1:
        raise InputError(f"number of devices must be a positive integer, got {num_devices!r}")
    n_train, n_test = len(dataset.y_train), len(dataset.y_test)
    if kind != "natural" and (num_devices > n_train or num_devices > n_test):
        raise InputError(
            f"data.partition: {num_devices} devices but dataset {dataset.name!r} has only "
            f"{n_train} train and {n_test} test samples; every device needs at least one of each"
        )
    if kind == "iid":
        train = _even_split(rng.permutation(n_train), num_devices)
        test = _even_split(rng.permutation(n_test), num_devices)
    elif kind == "shards":
        train, test = _shards(dataset, num_devices, opts["shards_per_device"], rng)
    elif kind == "dirichlet":
        train, test = _dirichlet(dataset, num_devices, opts["alpha"], opts["test_per_device"], rng)
    else:
        train, test = natural(
            dataset, num_devices, rng, opts["train_per_device"], opts["test_per_device"],
            opts["balanced_test"],
        )  # fmt: skip
    empty_train = [d for d, idx in enumerate(train) if len(idx) == 0]
    empty_test = [d for d, idx in enumerate(test) if len(idx) == 0]
    if empty_train or empty_test:
        raise InputError(_empty_message(kind, empty_train, empty_test))
    return [
        DevicePartition(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64))
        for tr, te in zip(train, test, strict=True)
    ]


def _empty_message(kind: str, empty_train: list[int], empty_test: list[int]) -> str:
    """Describe which devices got no data."""
    parts = []
    if empty_train:
        parts.append(f"{len(empty_train)} device(s) get no train sample (e.g. {empty_train[:5]})")
    if empty_test:
        parts.append(f"{len(empty_test)} device(s) get no test sample (e.g. {empty_test[:5]})")
    if kind == "natural":
        return (
            f"data.partition ({kind}): " + "; ".join(parts) + ". Every user needs train and "
            "test rows (uci_har: data.options.split: per_user)."
        )
    return (
        f"data.partition ({kind}): " + "; ".join(parts) + ". Use fewer devices, a larger "
        "dataset, or (dirichlet) a larger alpha or test_per_device."
    )


def _even_split(indices: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split an index array into ``parts`` near-equal consecutive pieces."""
    return np.array_split(indices.astype(np.int64), parts)


def _largest_remainder(quota: np.ndarray, total: int) -> np.ndarray:
    """Round non-negative ``quota`` (summing to ``total``) to integers with the same sum."""
    counts = np.floor(quota).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        counts[np.argsort(-(quota - counts), kind="stable")[:short]] += 1
    return counts


def _class_pools(y: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Return each class's indices in a random order."""
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]
    counts = np.bincount(y, minlength=num_classes)
    return np.split(order.astype(np.int64), np.cumsum(counts)[:-1])


def _matched_test_split(
    counts: np.ndarray, y_test: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Share each class's test samples among devices in proportion to ``counts[:, c]``.

    ``counts`` is the (devices, classes) matrix of train label counts. Test samples of a
    class no device trains on are left out.
    """
    num_devices, num_classes = counts.shape
    pools = _class_pools(y_test, num_classes, rng)
    owners = []
    taken = []
    for c in range(num_classes):
        total = int(counts[:, c].sum())
        if total == 0 or len(pools[c]) == 0:
            continue
        share = _largest_remainder(counts[:, c] * (len(pools[c]) / total), len(pools[c]))
        owners.append(np.repeat(np.arange(num_devices), share))
        taken.append(pools[c])
    if not taken:
        return [np.empty(0, dtype=np.int64) for _ in range(num_devices)]
    return _group(np.concatenate(taken), np.concatenate(owners), num_devices)


def _shards(
    dataset: Dataset, num_devices: int, shards_per_device: Any, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label-sorted shards for train; the matching label assignment for test."""
    if not isinstance(shards_per_device, int) or shards_per_device < 1:
        raise InputError(
            f"data.partition.shards_per_device: expected a positive integer, got "
            f"{shards_per_device!r}"
        )
    y = dataset.y_train
    num_shards = shards_per_device * num_devices
    if num_shards > len(y):
        raise InputError(
            f"data.partition: {num_devices} devices x {shards_per_device} shards = {num_shards} "
            f"shards, but dataset {dataset.name!r} has only {len(y)} train samples"
        )
    order = np.argsort(y, kind="stable")
    sizes = np.full(num_shards, len(y) // num_shards, dtype=np.int64)
    sizes[: len(y) % num_shards] += 1
    shard_of_sample = np.repeat(np.arange(num_shards), sizes)
    device_of_shard = np.empty(num_shards, dtype=np.int64)
    device_of_shard[rng.permutation(num_shards)] = np.repeat(
        np.arange(num_devices), shards_per_device
    )
    owners = device_of_shard[shard_of_sample]
    train = _group(order, owners, num_devices)
    counts = np.zeros((num_devices, dataset.num_classes), dtype=np.int64)
    np.add.at(counts, (owners, y[order]), 1)
    return train, _matched_test_split(counts, dataset.y_test, rng)


def _dirichlet(
    dataset: Dataset,
    num_devices: int,
    alpha: Any,
    test_per_device: Any,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Dirichlet label skew for train; test with each device's train label distribution."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise InputError(f"data.partition.alpha: expected a positive number, got {alpha!r}")
    if test_per_device is not None and (
        isinstance(test_per_device, bool)
        or not isinstance(test_per_device, int)
        or test_per_device < 1
    ):
        raise InputError(
            "data.partition.test_per_device: expected a positive integer or null, got "
            f"{test_per_device!r}"
        )
    num_classes = dataset.num_classes
    pools = _class_pools(dataset.y_train, num_classes, rng)
    sizes = np.array([len(p) for p in pools], dtype=np.int64)
    props = rng.dirichlet(np.full(num_devices, float(alpha)), size=num_classes)
    counts = rng.multinomial(sizes, props).T.copy()  # (devices, classes)
    # Repair: each empty device takes one sample of the largest class of the largest device.
    totals = counts.sum(axis=1)
    for empty_dev in np.flatnonzero(totals == 0):
        donor = int(np.argmax(totals))
        c = int(np.argmax(counts[donor]))
        counts[donor, c] -= 1
        counts[empty_dev, c] += 1
        totals[donor] -= 1
        totals[empty_dev] += 1
    owners = np.concatenate(
        [np.repeat(np.arange(num_devices), counts[:, c]) for c in range(num_classes)]
    )
    train = _group(np.concatenate(pools), owners, num_devices)
    if test_per_device is not None:
        return train, _sampled_test(counts, dataset.y_test, test_per_device, rng)
    test = _matched_test_split(counts, dataset.y_test, rng)
    # A device whose proportional share rounds to nothing gets one test sample of its
    # most common train class (shared with the device that already holds it).
    empty = [d for d, idx in enumerate(test) if len(idx) == 0]
    if empty:
        test_pools = _class_pools(dataset.y_test, num_classes, rng)
        for d in empty:
            order = np.argsort(-counts[d], kind="stable")
            usable = [int(k) for k in order if counts[d, k] > 0 and len(test_pools[k]) > 0]
            if usable:
                pool = test_pools[usable[0]]
                test[d] = pool[rng.integers(0, len(pool), size=1)]
    return train, test


def _sampled_test(
    counts: np.ndarray, y_test: np.ndarray, size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Draw ``size`` test samples per device with the label mix of its train counts.

    Each device takes, from a shuffled pool of each class, a window starting at a
    random offset: a uniformly random subset of that class, no repeats unless the
    window is longer than the pool.
    """
    num_devices, num_classes = counts.shape
    pools = _class_pools(y_test, num_classes, rng)
    avail = np.array([len(p) for p in pools]) > 0
    weights = counts * avail
    if np.any(weights.sum(axis=1) == 0):
        bad = np.flatnonzero(weights.sum(axis=1) == 0)[:5].tolist()
        raise InputError(
            f"data.partition: device(s) {bad} train only on classes absent from the test set"
        )
    quota = size * weights / weights.sum(axis=1, keepdims=True)
    want = np.floor(quota).astype(np.int64)
    short = size - want.sum(axis=1)
    rank = np.argsort(np.argsort(-(quota - want), axis=1, kind="stable"), axis=1)
    want += rank < short[:, None]
    owners, taken = [], []
    for c in range(num_classes):
        if not avail[c]:
            continue
        k = want[:, c]
        devs = np.repeat(np.arange(num_devices), k)
        starts = np.repeat(np.cumsum(k) - k, k)
        within = np.arange(int(k.sum())) - starts
        offset = np.asarray(rng.integers(0, len(pools[c]), size=num_devices))
        taken.append(pools[c][(offset[devs] + within) % len(pools[c])])
        owners.append(devs)
    return _group(np.concatenate(taken), np.concatenate(owners), num_devices)
