"""The ``natural`` partition: one device per user, optionally a seeded sample of its rows.

With ``train_per_device`` a device keeps that many of its user's train rows, drawn
uniformly without replacement; with ``test_per_device`` that many of its test rows, drawn
uniformly, or as class-balanced as the user's rows allow with ``balanced_test`` (PerFit's
MobiAct setup: 480 train and 160 balanced test windows per user). Without them a device
keeps all its user's rows and no random draw is made.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.data.datasets import Dataset
from fedsim.errors import InputError


def group(indices: np.ndarray, owners: np.ndarray, num_devices: int) -> list[np.ndarray]:
    """Group ``indices`` by their owning device (vectorised, order kept within a device)."""
    order = np.argsort(owners, kind="stable")
    counts = np.bincount(owners, minlength=num_devices)
    return np.split(indices[order].astype(np.int64), np.cumsum(counts)[:-1])


def balanced_counts(available: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Return per-class counts summing to ``total``, as equal as ``available`` allows.

    Water-filling: every class gets ``min(available, level)`` for the highest level that
    fits; the rows still missing go one each to random classes that have more rows.
    ``total`` must not exceed ``available.sum()``.
    """
    counts = np.zeros_like(available)
    while True:
        room = available - counts
        open_classes = np.flatnonzero(room > 0)
        left = total - int(counts.sum())
        if left == 0:
            return counts
        level = left // len(open_classes)
        if level == 0:
            counts[rng.choice(open_classes, size=left, replace=False)] += 1
            return counts
        counts[open_classes] += np.minimum(room[open_classes], level)


def _sample(
    rows: np.ndarray, size: int, labels: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Return ``size`` of ``rows`` drawn without replacement (class-balanced if ``labels``)."""
    if labels is None:
        return rows[rng.permutation(len(rows))[:size]]
    classes, available = np.unique(labels, return_counts=True)
    want = balanced_counts(available, size, rng)
    taken = [
        rows[labels == c][rng.permutation(int(n))[:k]]
        for c, n, k in zip(classes, available, want, strict=True)
    ]
    return np.concatenate(taken)


def _check(opts: dict[str, Any]) -> None:
    """Raise InputError for bad ``train_per_device``, ``test_per_device``, ``balanced_test``."""
    problems = []
    for key in ("train_per_device", "test_per_device"):
        value = opts[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            problems.append(
                f"data.partition.{key}: expected a positive integer or null, got {value!r}"
            )
    if not isinstance(opts["balanced_test"], bool):
        problems.append(
            f"data.partition.balanced_test: expected true or false, got {opts['balanced_test']!r}"
        )
    elif opts["balanced_test"] and opts["test_per_device"] is None:
        problems.append("data.partition.balanced_test: needs data.partition.test_per_device")
    if problems:
        raise InputError(problems)


def natural(
    dataset: Dataset,
    num_devices: int,
    rng: np.random.Generator,
    train_per_device: int | None = None,
    test_per_device: int | None = None,
    balanced_test: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One device per user (users in ascending id order), optionally sampled.

    Devices are sampled in device order from ``rng`` (train, then test, per device); no
    draw is made when ``train_per_device`` and ``test_per_device`` are both None.

    Raises
    ------
    InputError
        For a bad parameter value, if the dataset has no users, their number differs from
        ``num_devices``, or a user has fewer rows than asked for (naming the devices, their
        users and the counts).
    """
    _check(
        {"train_per_device": train_per_device, "test_per_device": test_per_device,
         "balanced_test": balanced_test}
    )  # fmt: skip
    if dataset.users_train is None or dataset.users_test is None:
        raise InputError(
            f"data.partition.kind: 'natural' needs a dataset with users; {dataset.name!r} has "
            "none (use iid, shards or dirichlet)"
        )
    users = np.union1d(dataset.users_train, dataset.users_test)
    if len(users) != num_devices:
        raise InputError(
            f"data.partition: 'natural' gives one device per user; dataset {dataset.name!r} has "
            f"{len(users)} users but the topology has {num_devices} devices"
        )
    train_owner = np.searchsorted(users, dataset.users_train)
    test_owner = np.searchsorted(users, dataset.users_test)
    train = group(np.arange(len(train_owner)), train_owner, num_devices)
    test = group(np.arange(len(test_owner)), test_owner, num_devices)
    if train_per_device is None and test_per_device is None:
        return train, test
    short = []
    for d in range(num_devices):
        for name, parts, size in (
            ("train", train, train_per_device),
            ("test", test, test_per_device),
        ):
            if size is not None and len(parts[d]) < size:
                short.append(f"device {d} (user {users[d]}) has {len(parts[d])} {name} rows")
    if short:
        asked = ", ".join(
            f"{name}_per_device: {size}"
            for name, size in (("train", train_per_device), ("test", test_per_device))
            if size is not None
        )
        raise InputError(
            f"data.partition: 'natural' with {asked} needs that many rows of each user; "
            + "; ".join(short[:5])
            + (f" (and {len(short) - 5} more)" if len(short) > 5 else "")
            + ". Ask for fewer, or give the dataset more rows per user"
        )
    for d in range(num_devices):
        if train_per_device is not None:
            train[d] = _sample(train[d], train_per_device, None, rng)
        if test_per_device is not None:
            labels = dataset.y_test[test[d]] if balanced_test else None
            test[d] = _sample(test[d], test_per_device, labels, rng)
    return train, test
