"""UCI HAR as a dataset: its engineered or inertial view, split officially or per user.

Labels 1..6 become 0..5 (``ACTIVITY_NAMES`` order); the users are the 30 volunteers
(subject ids 1..30), so ``partition.kind: natural`` makes one device per volunteer. The
official split puts 21 volunteers in train and 9 in test, so no volunteer has both;
``split: per_user`` pools all 10,299 windows and splits each volunteer's own windows,
stratified by activity and seeded, keeping ``test_fraction`` of them for test.

``features: engineered`` gives the 561 features of each window, as published (already
scaled to [-1, 1]); ``features: inertial`` gives the raw window, 9 channels x 128 samples
(body_acc x/y/z, body_gyro x/y/z, total_acc x/y/z), each channel standardised with the
mean and standard deviation of the training windows.

The files are found and read by fedsim/data/har_files.py; :func:`download_uci_har` (from
fedsim/data/har_download.py) fetches them where a network is available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.datasets import Dataset
from fedsim.data.har_download import download_uci_har as download_uci_har
from fedsim.data.har_files import (
    INERTIAL_SIGNALS,
    NUM_FEATURES,
    SPLITS,
    WINDOW_SAMPLES,
    Source,
    check_known,
    feature_files,
    find_source,
    label_files,
    parse_ints,
    parse_rows,
)
from fedsim.errors import InputError
from fedsim.seeding import Purpose, stream

ACTIVITY_NAMES: tuple[str, ...] = (
    "WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING",
)  # fmt: skip
NUM_SUBJECTS = 30
FEATURE_VIEWS: tuple[str, ...] = ("engineered", "inertial")
SPLIT_KINDS: tuple[str, ...] = ("official", "per_user")
#: Option defaults of dataset ``uci_har``.
DEFAULTS: dict[str, Any] = {"features": "engineered", "split": "official", "test_fraction": 0.25}


def input_shape(features: str) -> tuple[int, ...]:
    """Return one sample's shape in a view: ``(561,)`` or ``(9, 128)``."""
    return (NUM_FEATURES,) if features == "engineered" else (len(INERTIAL_SIGNALS), WINDOW_SAMPLES)


def option_problems(opts: Mapping[str, Any]) -> list[str]:
    """Return one line per bad value of the options ``features``, ``split``, ``test_fraction``."""
    return choice_problems(opts, {"features": FEATURE_VIEWS, "split": SPLIT_KINDS})


def choice_problems(opts: Mapping[str, Any], choices: Mapping[str, Sequence[str]]) -> list[str]:
    """Return one line per option of ``choices`` not among its values, and per bad fraction.

    ``test_fraction`` must lie in (0, 1); ``synthetic_har`` checks its options with it too.
    """
    problems = []
    for key, allowed in choices.items():
        if opts[key] not in allowed:
            problems.append(
                f"data.options.{key}: expected {' or '.join(allowed)}, got {opts[key]!r}"
            )
    if not 0 < opts["test_fraction"] < 1:
        problems.append(
            f"data.options.test_fraction: expected 0 < value < 1, got {opts['test_fraction']}"
        )
    return problems


def read_split(
    source: Source, split: str, features: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read one split's inputs, labels (0..5) and subjects.

    Returns
    -------
    x : np.ndarray
        float32 ``(n, 561)`` or ``(n, 9, 128)``.
    y, subjects : np.ndarray
        int64 ``(n,)``.
    problems : list of str
        Row counts that disagree and known files that are corrupt, each naming the file.

    Raises
    ------
    InputError
        For the first file that cannot be read or parsed.
    """
    y_rel, s_rel = label_files(split)
    problems = []
    raw_y, raw_s = source.read(y_rel), source.read(s_rel)
    problems += [
        p for p in (check_known(source, y_rel, raw_y), check_known(source, s_rel, raw_s)) if p
    ]
    y = parse_ints(raw_y, source.where(y_rel), 1, len(ACTIVITY_NAMES)) - 1
    subjects = parse_ints(raw_s, source.where(s_rel), 1, NUM_SUBJECTS)
    columns = NUM_FEATURES if features == "engineered" else WINDOW_SAMPLES
    channels = []
    for rel in feature_files(split, features):
        rows = parse_rows(source.read(rel), source.where(rel), columns).astype(np.float32)
        if len(rows) != len(y):
            problems.append(
                f"{source.where(rel)} has {len(rows)} rows but {source.where(y_rel)} has "
                f"{len(y)}; expected one row per window in both"
            )
        channels.append(rows)
    if len(subjects) != len(y):
        problems.append(
            f"{source.where(s_rel)} has {len(subjects)} rows but {source.where(y_rel)} has "
            f"{len(y)}; expected one row per window in both"
        )
    if problems:
        return np.empty(0, np.float32), y, subjects, problems
    x = channels[0] if features == "engineered" else np.stack(channels, axis=1)
    return x, y, subjects, []


def load_har_arrays(
    data_dir: Path, features: str
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read both official splits of a view.

    Returns
    -------
    dict
        ``{"train": (x, y, subjects), "test": (x, y, subjects)}`` as :func:`read_split`.

    Raises
    ------
    InputError
        Naming every place looked at if the files are missing, the first unreadable or
        malformed file, or every disagreeing row count and corrupt file.
    """
    source = find_source(data_dir, features)
    out, problems = {}, []
    for split in SPLITS:
        x, y, subjects, bad = read_split(source, split, features)
        problems += bad
        out[split] = (x, y, subjects)
    if problems:
        raise InputError(problems)
    return out


def subject_split(y: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Return a test mask over one subject's rows: ``round(n * test_fraction)`` of them.

    At least one row goes to test and one stays in train (``n >= 2``); the test rows of
    each activity are in proportion to its rows (largest remainders, ties at random), each
    a uniformly random choice among them.
    """
    n = len(y)
    n_test = int(np.clip(round(n * test_fraction), 1, n - 1))
    perm = rng.permutation(n)
    order = perm[np.argsort(y[perm], kind="stable")]  # shuffled within each activity
    _, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    quota = counts * (n_test / n)
    take = np.floor(quota).astype(np.int64)
    extra = np.lexsort((rng.random(len(quota)), -(quota - take)))[: n_test - int(take.sum())]
    take[extra] += 1
    rank = np.arange(n) - np.repeat(starts, counts)
    is_test = np.zeros(n, dtype=bool)
    is_test[order] = rank < np.repeat(take, counts)
    return is_test


def per_user_split(
    y: np.ndarray, subjects: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split each subject's rows into train and test, stratified by activity and seeded.

    Subject ``s`` keeps ``round(n_s * test_fraction)`` of its ``n_s`` rows (at least one,
    and at least one for train) for test, by :func:`subject_split` with the stream
    ``stream(seed, Purpose.DATA, s)``.

    Returns
    -------
    train_idx, test_idx : np.ndarray
        Sorted int64 row indices.

    Raises
    ------
    InputError
        If a subject has fewer than two rows (naming it).
    """
    is_test = np.zeros(len(y), dtype=bool)
    ids, counts = np.unique(subjects, return_counts=True)
    few = [f"subject {int(s)} has {int(c)}" for s, c in zip(ids, counts, strict=True) if c < 2]
    if few:
        raise InputError(
            "data.options.split: per_user needs at least 2 rows of each subject (one for "
            "train, one for test); " + ", ".join(few[:5])
        )
    for subject in ids:
        rows = np.flatnonzero(subjects == subject)
        rng = stream(seed, Purpose.DATA, int(subject))
        is_test[rows] = subject_split(y[rows], test_fraction, rng)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise ``(n, channels, samples)`` windows per channel with train statistics."""
    mean = x_train.mean(axis=(0, 2), dtype=np.float64)[None, :, None]
    std = x_train.std(axis=(0, 2), dtype=np.float64)[None, :, None]
    std[std == 0] = 1.0
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
    )


def load_har(data_dir: Path, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Return UCI HAR as a dataset of 6 activities with the 30 volunteers as users.

    Parameters
    ----------
    data_dir : Path
        The data folder; see :func:`fedsim.data.har_files.candidates` for where the files
        are looked for (first ``<data_dir>/uci_har/UCI HAR Dataset/``, then zips in
        ``<data_dir>/uci_har/``).
    seed : int
        Scenario seed; only ``split: per_user`` depends on it.
    options : mapping
        ``features`` (``engineered`` | ``inertial``), ``split`` (``official`` |
        ``per_user``), ``test_fraction`` (0.25; ``per_user`` only), already type-checked.

    Raises
    ------
    InputError
        For a bad option value, missing or malformed files.
    """
    opts = {**DEFAULTS, **options}
    problems = option_problems(opts)
    if problems:
        raise InputError(problems)
    features = str(opts["features"])
    arrays = load_har_arrays(data_dir, features)
    (xtr, ytr, s_tr), (xte, yte, s_te) = arrays["train"], arrays["test"]
    if opts["split"] == "per_user":
        x, y, users = (
            np.concatenate([xtr, xte]),
            np.concatenate([ytr, yte]),
            np.concatenate([s_tr, s_te]),
        )
        train_idx, test_idx = per_user_split(y, users, float(opts["test_fraction"]), seed)
        xtr, ytr, s_tr = x[train_idx], y[train_idx], users[train_idx]
        xte, yte, s_te = x[test_idx], y[test_idx], users[test_idx]
    if features == "inertial":
        xtr, xte = standardise(xtr, xte)
    return Dataset(
        name="uci_har",
        x_train=np.ascontiguousarray(xtr, dtype=np.float32),
        y_train=ytr,
        x_test=np.ascontiguousarray(xte, dtype=np.float32),
        y_test=yte,
        num_classes=len(ACTIVITY_NAMES),
        input_shape=input_shape(features),
        users_train=s_tr,
        users_test=s_te,
    )
