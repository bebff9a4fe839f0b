"""Data sharing (Zhao et al. 2018, PerFit section IV-E): a small global subset for every device.

The cloud holds a class-balanced subset G of the training set (``global_size`` rows, as
even over the classes as their counts allow); G is taken out before the devices' data are
partitioned, so no device owns a row of G. Each device then receives ``per_device`` rows of
G (a seeded draw without replacement, its own per device) and trains on its own rows and
them (``train: false``: holds them without training on them, federated distillation's
public set). The rows a device received are its partition's ``shared_idx``: the run folder records
them (``data_sharing.csv``) and the bytes they took to send.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from fedsim.data.datasets import Dataset
from fedsim.data.partition import DevicePartition
from fedsim.errors import InputError
from fedsim.seeding import Purpose, stream

#: Keys of the draw of G itself and of the devices' draws (then keyed by device id).
_GLOBAL, _DEVICE = 0, 1


def global_subset(y: np.ndarray, num_classes: int, size: int, seed: int) -> np.ndarray:
    """Return ``size`` sorted training rows, class-balanced: each class its even share.

    Classes with fewer rows than their share give all they have and the rest is spread
    over the others (water-filling), so the subset has exactly ``size`` rows.

    Raises
    ------
    InputError
        ``size`` exceeds the training rows.
    """
    if size > len(y):
        raise InputError(
            f"data.sharing.global_size: {size} rows asked, the training set has {len(y)}"
        )
    rng = stream(seed, Purpose.SHARING, _GLOBAL)
    counts = np.bincount(y, minlength=num_classes)
    take = np.zeros(num_classes, dtype=np.int64)
    left = size
    open_classes = [c for c in range(num_classes) if counts[c] > 0]
    while left > 0 and open_classes:
        share, extra = divmod(left, len(open_classes))
        for i, c in enumerate(open_classes):
            add = min(share + (1 if i < extra else 0), counts[c] - take[c])
            take[c] += add
            left -= add
        open_classes = [c for c in open_classes if take[c] < counts[c]]
    rows = [rng.permutation(np.flatnonzero(y == c))[: take[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(rows).astype(np.int64))


def partition_with_sharing(
    dataset: Dataset,
    split: Callable[[Dataset], list[DevicePartition]],
    global_size: int,
    per_device: int,
    seed: int,
    train: bool = True,
) -> list[DevicePartition]:
    """Partition ``dataset`` without G, then give every device ``per_device`` rows of G.

    ``split`` partitions a dataset (the scenario's partition kind); it sees the training
    rows outside G only, and its indices are mapped back to ``dataset``'s rows. The rows a
    device receives join its training rows when ``train``; otherwise they are only its
    ``shared_idx`` (held, not trained on: federated distillation's public set).
    """
    if per_device > global_size:
        raise InputError(
            f"data.sharing.per_device: {per_device} rows, more than global_size {global_size}"
        )
    shared = global_subset(dataset.y_train, dataset.num_classes, global_size, seed)
    rest = np.setdiff1d(np.arange(len(dataset.y_train), dtype=np.int64), shared)
    users = dataset.users_train
    outside = dataclasses.replace(
        dataset,
        x_train=dataset.x_train[:0],  # a partition reads labels and users only
        y_train=dataset.y_train[rest],
        users_train=None if users is None else users[rest],
    )
    parts = []
    for device, part in enumerate(split(outside)):
        got = np.sort(
            stream(seed, Purpose.SHARING, _DEVICE, device).choice(shared, per_device, False)
        )
        own = rest[part.train_idx]
        rows = np.union1d(own, got) if train else np.sort(own)
        parts.append(DevicePartition(rows.astype(np.int64), part.test_idx, got))
    return parts


def sharing_record(parts: list[DevicePartition], sample_bytes: int) -> SharingRecord | None:
    """Return what the run folder records of the shared rows (None: nothing was shared)."""
    if not any(len(p.shared_idx) for p in parts):
        return None
    return SharingRecord([p.shared_idx for p in parts], sample_bytes)


@dataclasses.dataclass(frozen=True)
class SharingRecord:
    """The provenance of shared rows (``data_sharing.csv``) and the bytes they took.

    Attributes
    ----------
    rows : list of numpy.ndarray
        Per device id, the training-set rows it received from the cloud.
    sample_bytes : int
        Bytes of one sample with its label, as sent.
    """

    rows: list[np.ndarray]
    sample_bytes: int

    def files(self) -> dict[str, str]:
        """Return ``data_sharing.csv``: one line per row a device received."""
        lines = ["device_id,train_row"]
        lines += [f"{d},{int(r)}" for d, rows in enumerate(self.rows) for r in rows]
        return {"data_sharing.csv": "\n".join(lines) + "\n"}

    def summary(self, virtual_time_s: float) -> dict[str, float | int]:
        """Return the summary's entries: rows and bytes the cloud sent, over all devices."""
        count = sum(len(r) for r in self.rows)
        return {"shared_rows": count, "shared_bytes_down": count * self.sample_bytes}
