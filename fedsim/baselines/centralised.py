"""Centralised baselines: one model trained on the devices' pooled data, scored per device.

PerFit's section V compares personalised FL with centralised SVM, kNN, random forest and
centrally trained 3NN/CNN, each trained on the union of all clients' training data and tested
on every client's own test data. Here the data are exactly the simulator's: the scenario's
dataset, partition and noisy clients (:func:`fedsim.prepare.device_data`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.config import Scenario
from fedsim.data import Dataset, DevicePartition
from fedsim.errors import InputError
from fedsim.prepare import Prepared, check, device_data
from fedsim.seeding import Purpose, int_seed, stream

#: The baselines, in the order they run: linear SVM, k nearest neighbours, random forest,
#: and the scenario's own model trained centrally by plain minibatch SGD.
METHODS: tuple[str, ...] = ("svm", "knn", "rf", "nn")
#: Columns of the per-device table and of the summary.
PER_DEVICE_COLUMNS = ["method", "device_id", "test_samples", "accuracy"]
SUMMARY_COLUMNS = ["method", "devices", "train_samples", "ua_mean", "ua_std", "ua_min", "ua_max"]
#: ``Purpose.BASELINE`` stream key of the ``max_train`` subsample; method ``m`` uses
#: ``METHODS.index(m) + 1``.
_SUBSAMPLE_KEY = 0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BaselineOptions:
    """What to train, and how.

    Attributes
    ----------
    methods : tuple of str
        Baselines to run, from :data:`METHODS`, in this order.
    knn_k : int
        Neighbours of the kNN classifier.
    rf_trees : int
        Trees of the random forest.
    svm_c : float
        Regularisation ``C`` of the linear SVM.
    epochs : int
        Passes of the neural net over the pooled training rows.
    lr, batch_size : float or int, optional
        SGD step size and batch of the neural net; None takes the scenario's device
        optimiser's when it is plain SGD (``fedavg``, ``fedadam``), else PerFit's lr 0.01
        and the algorithm's ``batch_size`` (20 without one).
    max_train : int, optional
        Train every method on a seeded subsample of this many pooled rows (None: all).
    """

    methods: tuple[str, ...] = METHODS
    knn_k: int = 5
    rf_trees: int = 100
    svm_c: float = 1.0
    epochs: int = 20
    lr: float | None = None
    batch_size: int | None = None
    max_train: int | None = None


@dataclass(frozen=True)
class PooledData:
    """The devices' data as the simulator sees them, and the rows the baselines train on.

    Attributes
    ----------
    dataset : Dataset
        The dataset, with noisy clients' copies appended (``data.noise``).
    partitions : tuple of DevicePartition
        Every device's rows, by device id.
    train_idx : numpy.ndarray
        Sorted rows of ``dataset.x_train`` to train on: the union of the devices' training
        rows, or a seeded subsample of it (``max_train``).
    pooled_rows : int
        Rows in the union before any subsample.
    """

    dataset: Dataset
    partitions: tuple[DevicePartition, ...]
    train_idx: np.ndarray
    pooled_rows: int


def parse_methods(text: str) -> tuple[str, ...]:
    """Return the names in a comma-separated list (``"svm,knn"``), unchecked.

    :func:`check_options` checks them.
    """
    return tuple(n.strip() for n in text.split(",") if n.strip())


def check_options(opts: BaselineOptions) -> list[str]:
    """Return one line per bad option, naming it by its command-line flag."""
    expected = f"expected a comma-separated list of {', '.join(METHODS)}"
    problems = []
    if not opts.methods:
        problems.append(f"--methods: no method given; {expected}")
    for name in opts.methods:
        if name not in METHODS:
            problems.append(f"--methods: unknown method {name!r}; {expected}")
    if len(set(opts.methods)) != len(opts.methods):
        problems.append(f"--methods: a method is named twice in {','.join(opts.methods)}")
    for flag, value in [("--knn-k", opts.knn_k), ("--rf-trees", opts.rf_trees),
                        ("--epochs", opts.epochs), ("--batch-size", opts.batch_size),
                        ("--max-train", opts.max_train)]:  # fmt: skip
        if value is not None and value < 1:
            problems.append(f"{flag}: expected an integer >= 1, got {value}")
    for flag, number in [("--svm-c", opts.svm_c), ("--lr", opts.lr)]:
        if number is not None and not (0 < number < float("inf")):
            problems.append(f"{flag}: expected a positive number, got {number}")
    return problems


def pooled_data(prep: Prepared, max_train: int | None = None) -> PooledData:
    """Return the scenario's device data and the pooled training rows.

    Raises
    ------
    InputError
        For a systems-only scenario (``data.samples_per_device``: no partition to pool).
    """
    sc = prep.scenario
    if sc.data.samples_per_device is not None:
        raise InputError(
            f"{prep.source}: data.samples_per_device: a systems-only scenario has no data "
            "partition to pool; give data.partition instead"
        )
    dataset, parts, _ = device_data(prep)
    union = np.unique(np.concatenate([p.train_idx for p in parts])).astype(np.int64)
    train_idx = union
    if max_train is not None and max_train < len(union):
        rng = stream(sc.seed, Purpose.BASELINE, _SUBSAMPLE_KEY)
        train_idx = np.sort(rng.choice(union, size=max_train, replace=False))
    return PooledData(dataset, tuple(parts), train_idx, len(union))


def method_seed(seed: int, method: str, *key: int) -> int:
    """Return the 63-bit seed of ``method``'s randomness (``Purpose.BASELINE`` stream)."""
    return int_seed(seed, Purpose.BASELINE, METHODS.index(method) + 1, *key)


def scored_rows(parts: Sequence[DevicePartition]) -> np.ndarray:
    """Return the sorted rows of ``x_test`` some device tests on."""
    nonempty = [p.test_idx for p in parts if len(p.test_idx)]
    if not nonempty:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(nonempty)).astype(np.int64)


def device_accuracies(
    parts: Sequence[DevicePartition], rows: np.ndarray, correct: np.ndarray
) -> list[float]:
    """Return each device's accuracy from the correctness of every row of :func:`scored_rows`.

    ``correct[i]`` says whether test row ``rows[i]`` was classified right; a device
    without test rows gets NaN.
    """
    out = []
    for p in parts:
        hits = correct[np.searchsorted(rows, p.test_idx)]
        out.append(float(hits.sum()) / len(hits) if len(hits) else float("nan"))
    return out


def run_baselines(
    scenario: Scenario | str | Path,
    options: BaselineOptions | None = None,
    overrides: list[str] | None = None,
    source: str | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Train each baseline on the pooled training rows; score it on every device's test rows.

    Parameters
    ----------
    scenario : Scenario, str or Path
        A validated scenario, or the path of a scenario file.
    options : BaselineOptions, optional
        Methods and their settings (default: all four, default settings).
    overrides : list of str, optional
        ``key.path=value`` items (only with a path).
    source : str, optional
        Where the scenario came from, for messages.
    progress : callable, optional
        Called with one line of text as each method starts and ends.

    Returns
    -------
    pandas.DataFrame
        One row per method and device (device id order): ``method, device_id,
        test_samples, accuracy``; ``attrs["train_samples"]`` holds the rows trained on.

    Raises
    ------
    InputError
        A bad scenario, option or data; each line names the file or the option.
    """
    from fedsim.baselines.classical import fit_predict_sklearn
    from fedsim.baselines.neural import train_predict_nn
    from fedsim.config import load_scenario

    opts = options or BaselineOptions()
    if problems := check_options(opts):
        raise InputError(problems)
    if not isinstance(scenario, Scenario):
        source = source or str(scenario)
        scenario = load_scenario(scenario, overrides)
    prep = check(scenario, source or "scenario")
    data = pooled_data(prep, opts.max_train)
    if "knn" in opts.methods and opts.knn_k > len(data.train_idx):
        raise InputError(
            f"--knn-k: {opts.knn_k} neighbours need as many training rows; "
            f"there are {len(data.train_idx)}"
        )
    say = progress or (lambda _line: None)
    rows = scored_rows(data.partitions)
    threads = scenario.runtime.torch_threads
    frames = []
    for method in opts.methods:
        say(f"{method}: training on {len(data.train_idx):,} rows ({data.pooled_rows:,} pooled)")
        t0 = time.perf_counter()
        if method == "nn":
            pred = train_predict_nn(prep, data, rows, opts, say)
        else:
            pred = fit_predict_sklearn(method, data, rows, opts, scenario.seed, threads, say)
        correct = pred == data.dataset.y_test[rows]
        acc = device_accuracies(data.partitions, rows, correct)
        frames.append(pd.DataFrame({
            "method": method,
            "device_id": np.arange(len(data.partitions), dtype=np.int64),
            "test_samples": [len(p.test_idx) for p in data.partitions],
            "accuracy": acc,
        }))  # fmt: skip
        say(f"{method}: done in {time.perf_counter() - t0:.1f} s, mean UA {np.nanmean(acc):.4f}")
    out = pd.concat(frames, ignore_index=True)[PER_DEVICE_COLUMNS]
    out.attrs["train_samples"] = len(data.train_idx)
    return out


def summarise(per_device: pd.DataFrame) -> pd.DataFrame:
    """Return one row per method: devices, training rows, and the mean, std, min, max UA.

    The standard deviation is the population one (``ddof=0``) over the devices; devices
    without test rows (NaN) are left out. Methods keep their order in ``per_device``.
    """
    rows = []
    for method, group in per_device.groupby("method", sort=False):
        acc = group["accuracy"].to_numpy(dtype=float)
        acc = acc[~np.isnan(acc)]
        rows.append({
            "method": method,
            "devices": len(group),
            "train_samples": per_device.attrs.get("train_samples"),
            "ua_mean": float(acc.mean()) if len(acc) else float("nan"),
            "ua_std": float(acc.std(ddof=0)) if len(acc) else float("nan"),
            "ua_min": float(acc.min()) if len(acc) else float("nan"),
            "ua_max": float(acc.max()) if len(acc) else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
