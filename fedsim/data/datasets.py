"""In-memory datasets (``digits``, ``synthetic``, ``mnist``, ``cifar10``, HAR) and their loader."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.errors import InputError
from fedsim.seeding import Purpose, stream

DATASET_NAMES: tuple[str, ...] = (
    "digits", "synthetic", "mnist", "cifar10", "uci_har", "synthetic_har",
)  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    """A labelled classification dataset split into train and test.

    Attributes
    ----------
    name : str
        The dataset's name.
    x_train, x_test : np.ndarray
        float32 inputs of shape ``(n, *input_shape)``, already normalised.
    y_train, y_test : np.ndarray
        int64 labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes.
    input_shape : tuple of int
        Shape of one input sample.
    users_train, users_test : np.ndarray or None
        int64 user id of each sample, for datasets with natural users.
    test_rows : int or None
        The global test set's rows: the first ``test_rows`` of ``x_test`` (None: all; rows
        after them are devices' own noisy copies, ``fedsim.data.noise``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    users_train: np.ndarray | None = None
    users_test: np.ndarray | None = None
    test_rows: int | None = None

    @property
    def global_test_rows(self) -> int:
        """Return how many leading rows of ``x_test`` make the global test set."""
        return len(self.y_test) if self.test_rows is None else self.test_rows

    def without_rows(self) -> Dataset:
        """Return the dataset's name, shapes and classes with no samples (cheap to send)."""
        return dataclasses.replace(
            self, x_train=self.x_train[:0].copy(), y_train=self.y_train[:0].copy(),
            x_test=self.x_test[:0].copy(), y_test=self.y_test[:0].copy(),
            users_train=None, users_test=None, test_rows=self.global_test_rows,
        )  # fmt: skip


def data_dir_from_env(explicit: Path | None) -> Path:
    """Return the data folder: ``explicit``, else ``$FEDSIM_DATA``, else ``~/.fedsim/data``.

    Parameters
    ----------
    explicit : Path or None
        A folder given by the caller (e.g. the scenario's ``data.dir``).
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("FEDSIM_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".fedsim" / "data"


def load_dataset(name: str, data_dir: Path | None, seed: int, **options: Any) -> Dataset:
    """Load or generate a dataset by name.

    Parameters
    ----------
    name : str
        One of ``digits``, ``synthetic``, ``mnist``, ``cifar10``, ``uci_har``,
        ``synthetic_har``.
    data_dir : Path or None
        Folder holding downloaded files (``mnist``, ``cifar10`` and ``uci_har`` read
        files); ``None`` means :func:`data_dir_from_env`.
    seed : int
        Scenario seed; the train/test split (``digits``, ``uci_har`` with ``split:
        per_user``) and the generated data (``synthetic``, ``synthetic_har``) are
        functions of it. ``mnist`` and ``cifar10`` do not depend on it.
    **options
        Dataset options. ``synthetic``: ``num_samples`` (6000), ``num_features`` (60),
        ``num_classes`` (10), ``num_users`` (30), ``alpha`` (1.0), ``beta`` (1.0),
        ``test_fraction`` (0.2), ``size_sigma`` (0.0), ``image_shape`` (none: flat).
        ``uci_har``: ``features`` (``engineered`` | ``inertial``), ``split``
        (``official`` | ``per_user``), ``test_fraction`` (0.25) (fedsim/data/har.py).
        ``synthetic_har``: see fedsim/data/synthetic_har.py. ``digits``, ``mnist`` and
        ``cifar10`` take none.

    Raises
    ------
    InputError
        For an unknown name or option, a bad option value, or missing/corrupt files.
    """
    loaders: Mapping[str, Callable[..., Dataset]] = {
        "digits": _load_digits,
        "synthetic": _make_synthetic,
        "mnist": _load_mnist,
        "cifar10": _load_cifar10,
        "uci_har": _load_uci_har,
        "synthetic_har": _make_synthetic_har,
    }
    if name not in loaders:
        raise InputError(
            f"data.dataset: unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}"
        )
    return loaders[name](data_dir, seed, options)


def _check_options(name: str, options: Mapping[str, Any], known: Mapping[str, type]) -> None:
    """Raise InputError for unknown options or values of the wrong type."""
    problems = []
    for key, value in options.items():
        if key not in known:
            expected = ", ".join(sorted(known)) if known else "none"
            problems.append(
                f"data.options.{key}: unknown option for dataset {name!r}; known options: "
                f"{expected}"
            )
            continue
        want = known[key]
        if want is str:
            if not isinstance(value, str):
                problems.append(f"data.options.{key}: expected a string, got {value!r}")
            continue
        if want is list:  # a list of integers (a shape)
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                problems.append(f"data.options.{key}: expected a list of integers, got {value!r}")
            continue
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if want is int
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not ok:
            problems.append(
                f"data.options.{key}: expected {want.__name__}, got {value!r} "
                f"({type(value).__name__})"
            )
    if problems:
        raise InputError(problems)


def _stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so each class keeps ``test_fraction`` of its samples for test.

    Returns
    -------
    train_idx, test_idx : np.ndarray
        Sorted int64 indices.
    """
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]  # shuffled within each class
    classes, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    n_test = np.rint(counts * test_fraction).astype(np.int64)
    rank = np.arange(len(y)) - np.repeat(starts, counts)
    is_test = rank < np.repeat(n_test, counts)
    return np.sort(order[~is_test]).astype(np.int64), np.sort(order[is_test]).astype(np.int64)


def _load_digits(data_dir: Path | None, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Return sklearn's 8x8 digits, scaled to [0, 1], split 80/20 stratified by the seed."""
    from sklearn.datasets import load_digits

    _check_options("digits", options, {})
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, 64)
    y = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = _stratified_split(y, 0.2, stream(seed, Purpose.DATA))
    return Dataset(
        name="digits",
        x_train=x[train_idx],
        y_train=y[train_idx],
        x_test=x[test_idx],
        y_test=y[test_idx],
        num_classes=10,
        input_shape=(64,),
    )


def _user_sizes(
    num_samples: int, num_users: int, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Split ``num_samples`` over users: equal, or log-normally skewed, at least 2 each."""
    spare = num_samples - 2 * num_users
    weights = rng.lognormal(0.0, sigma, num_users) if sigma > 0 else np.ones(num_users)
    quota = spare * weights / weights.sum()
    sizes = np.floor(quota).astype(np.int64)
    short = spare - int(sizes.sum())
    sizes[np.argsort(-(quota - sizes), kind="stable")[:short]] += 1
    return sizes + 2


#: Ranges of the ``synthetic`` options (the generated data must fit in memory).
SYNTHETIC_RANGES: dict[str, tuple[float, float]] = {
    "num_samples": (2, 10**7),
    "num_features": (1, 10**5),
    "num_classes": (2, 10**4),
    "num_users": (1, 10**6),
    "alpha": (0.0, 1e6),
    "beta": (0.0, 1e6),
    "size_sigma": (0.0, 5.0),
}
SYNTHETIC_MAX_VALUES = 10**8  # num_samples x num_features: 800 MB while generated


def _synthetic_problems(opts: Mapping[str, Any]) -> list[str]:
    """Return one line per ``synthetic`` option out of its range (all finite)."""
    problems = []
    for key, (lo, hi) in SYNTHETIC_RANGES.items():
        value = opts[key]
        if not lo <= value <= hi:  # nan and inf fail too (the bounds are finite)
            problems.append(
                f"data.options.{key}: expected a number in [{lo:g}, {hi:g}], got {value!r}"
            )
    test_fraction = opts["test_fraction"]
    if not 0 < test_fraction < 1:
        problems.append(f"data.options.test_fraction: expected 0 < value < 1, got {test_fraction}")
    if problems:
        return problems
    n, d, k = opts["num_samples"], opts["num_features"], opts["num_users"]
    if n < 2 * k:
        problems.append(
            f"data.options.num_samples: {n} is too few for {k} users "
            "(each user needs at least 2 samples: one train, one test)"
        )
    if n * d > SYNTHETIC_MAX_VALUES:
        problems.append(
            f"data.options: num_samples x num_features = {n * d:,} values; at most "
            f"{SYNTHETIC_MAX_VALUES:,} (the generated inputs must fit in memory)"
        )
    shape = opts["image_shape"]
    if shape is not None:
        if not shape or any(s < 1 for s in shape):
            problems.append(
                f"data.options.image_shape: expected a non-empty list of positive integers "
                f"(e.g. [3, 32, 32]), got {list(shape)}"
            )
        elif int(np.prod(shape, dtype=np.int64)) != d:
            problems.append(
                f"data.options.image_shape: {list(shape)} holds "
                f"{int(np.prod(shape, dtype=np.int64)):,} values but num_features is {d:,}; "
                "they must be equal (the inputs are reshaped to image_shape)"
            )
    return problems


def _make_synthetic(data_dir: Path | None, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Generate LEAF's ``synthetic(alpha, beta)`` data (Shamir et al. / Li et al., FedProx).

    User ``k`` draws ``u_k ~ N(0, alpha)`` and ``B_k ~ N(0, beta)``; its model is
    ``W_k ~ N(u_k, 1)`` (features x classes), ``b_k ~ N(u_k, 1)``; its inputs are
    ``x ~ N(v_k, diag(j^-1.2))`` with ``v_k ~ N(B_k, 1)``; labels are
    ``argmax(W_k^T x + b_k)``. ``alpha`` controls how much the users' models differ,
    ``beta`` how much their inputs differ. Each user keeps ``test_fraction`` of its
    samples (at least one) for test. ``size_sigma > 0`` makes user sizes log-normal.
    ``image_shape`` (e.g. ``[3, 32, 32]`` with ``num_features: 3072``) reshapes each input
    to that shape, its product ``num_features``, for models of images (``mtfl_cnn``); the
    values are the same as without it, in row-major order.
    """
    known: dict[str, type] = {
        "num_samples": int,
        "num_features": int,
        "num_classes": int,
        "num_users": int,
        "alpha": float,
        "beta": float,
        "test_fraction": float,
        "size_sigma": float,
        "image_shape": list,
    }
    _check_options("synthetic", options, known)
    opts: dict[str, Any] = {
        "num_samples": 6000,
        "num_features": 60,
        "num_classes": 10,
        "num_users": 30,
        "alpha": 1.0,
        "beta": 1.0,
        "test_fraction": 0.2,
        "size_sigma": 0.0,
        "image_shape": None,
    }
    opts.update(options)
    problems = _synthetic_problems(opts)
    if problems:
        raise InputError(problems)
    n, d, c, k = (opts[key] for key in ("num_samples", "num_features", "num_classes", "num_users"))
    alpha, beta = float(opts["alpha"]), float(opts["beta"])
    test_fraction, sigma = float(opts["test_fraction"]), float(opts["size_sigma"])

    rng = stream(seed, Purpose.DATA)
    sizes = _user_sizes(n, k, sigma, rng)
    u = rng.normal(0.0, np.sqrt(alpha), k)
    big_b = rng.normal(0.0, np.sqrt(beta), k)
    users = np.repeat(np.arange(k, dtype=np.int64), sizes)
    v = rng.normal(big_b[:, None], 1.0, (k, d))
    scale = np.arange(1, d + 1, dtype=np.float64) ** -0.6  # sqrt of j^-1.2
    x = v[users] + rng.standard_normal((n, d)) * scale
    y = np.empty(n, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    for user in range(k):  # one matrix product per user, not per sample
        w = rng.normal(u[user], 1.0, (d, c))
        b = rng.normal(u[user], 1.0, c)
        rows = slice(starts[user], starts[user] + sizes[user])
        y[rows] = np.argmax(x[rows] @ w + b, axis=1)

    n_test = np.clip(np.rint(sizes * test_fraction).astype(np.int64), 1, sizes - 1)
    # A random rank of each sample within its user: sort by (user, random key).
    keys = rng.random(n)
    order = np.lexsort((keys, users))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    is_test = rank < np.repeat(n_test, sizes)
    shape = (int(d),) if opts["image_shape"] is None else tuple(opts["image_shape"])
    x = x.astype(np.float32).reshape(n, *shape)
    return Dataset(
        name="synthetic",
        x_train=x[~is_test],
        y_train=y[~is_test],
        x_test=x[is_test],
        y_test=y[is_test],
        num_classes=int(c),
        input_shape=shape,
        users_train=users[~is_test],
        users_test=users[is_test],
    )


def _load_mnist(data_dir: Path | None, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Read MNIST from IDX files under the data folder."""
    from fedsim.data.mnist import load_mnist

    _check_options("mnist", options, {})
    return load_mnist(data_dir_from_env(data_dir))


def _load_cifar10(data_dir: Path | None, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Read CIFAR-10 from its python batches under the data folder."""
    from fedsim.data.cifar10 import load_cifar10

    _check_options("cifar10", options, {})
    return load_cifar10(data_dir_from_env(data_dir))


def _load_uci_har(data_dir: Path | None, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Read UCI HAR from its standard folder (or zip) under the data folder."""
    from fedsim.data.har import load_har

    _check_options("uci_har", options, {"features": str, "split": str, "test_fraction": float})
    return load_har(data_dir_from_env(data_dir), seed, options)


def _make_synthetic_har(data_dir: Path | None, seed: int, options: Mapping[str, Any]) -> Dataset:
    """Generate HAR-like data of users with their own activity mix and sensor transform."""
    from fedsim.data.synthetic_har import OPTION_TYPES, make_synthetic_har

    _check_options("synthetic_har", options, OPTION_TYPES)
    return make_synthetic_har(seed, options)
