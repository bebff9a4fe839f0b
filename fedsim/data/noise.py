"""Noisy clients (MTFL's Table 3): a fraction of the devices see Gaussian noise on their inputs.

The noisy devices are drawn once per run from a keyed stream (seed, noise). Each gets its own
noisy copy of its training and test rows (appended to the dataset; its partition points at
them), drawn from a stream keyed by the device, so a device's data do not depend on the
other devices or on the runtime. The other devices' rows are untouched.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedsim.data.datasets import Dataset
from fedsim.data.partition import DevicePartition
from fedsim.seeding import Purpose, stream


def noisy_devices(seed: int, num_devices: int, fraction: float) -> np.ndarray:
    """Return the sorted ids of the ``round(fraction * num_devices)`` noisy devices."""
    count = min(num_devices, max(1, round(fraction * num_devices)))
    chosen = stream(seed, Purpose.NOISE).choice(num_devices, size=count, replace=False)
    return np.sort(chosen.astype(np.int64))


def add_noise(
    dataset: Dataset, parts: list[DevicePartition], noisy: np.ndarray, std: float, seed: int
) -> tuple[Dataset, list[DevicePartition]]:
    """Return the dataset with the noisy devices' copies appended, and the new partitions."""
    xs_train, xs_test = [dataset.x_train], [dataset.x_test]
    n_train, n_test = len(dataset.y_train), len(dataset.y_test)
    ys_train, ys_test = [dataset.y_train], [dataset.y_test]
    out = list(parts)
    for d in noisy.tolist():
        p = parts[d]
        rng = stream(seed, Purpose.NOISE, d)
        train = dataset.x_train[p.train_idx]
        test = dataset.x_test[p.test_idx]
        xs_train.append(train + rng.normal(0.0, std, train.shape).astype(train.dtype))
        xs_test.append(test + rng.normal(0.0, std, test.shape).astype(test.dtype))
        ys_train.append(dataset.y_train[p.train_idx])
        ys_test.append(dataset.y_test[p.test_idx])
        out[d] = dataclasses.replace(
            p,
            train_idx=np.arange(n_train, n_train + len(p.train_idx), dtype=np.int64),
            test_idx=np.arange(n_test, n_test + len(p.test_idx), dtype=np.int64),
        )
        n_train += len(p.train_idx)
        n_test += len(p.test_idx)
    noisy_ds = dataclasses.replace(
        dataset,
        test_rows=dataset.global_test_rows,
        x_train=np.concatenate(xs_train), y_train=np.concatenate(ys_train),
        x_test=np.concatenate(xs_test), y_test=np.concatenate(ys_test),
    )  # fmt: skip
    return noisy_ds, out
