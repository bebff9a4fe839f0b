"""One message for all the updates of a host call: stacked numpy arrays, read zero-copy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedsim.algorithms.base import DeviceUpdate


@dataclass(frozen=True)
class UpdateBatch:
    """The updates of one host call, stacked key by key (row ``i`` is ``device_ids[i]``).

    Ray stores numpy arrays out of band in its shared-memory object store, so an edge actor
    reads a host's whole batch without copying it; one object per host call instead of one
    per device also keeps the number of objects (and their bookkeeping) small.

    Attributes
    ----------
    device_ids : tuple of int
        The devices, in the order of the host call.
    payload : dict of str to numpy.ndarray
        Each payload tensor stacked over devices: shape ``(len(device_ids), *shape)``.
    num_samples : tuple of int
        Aggregation weight (training samples) of each device.
    mean_loss : tuple of float
        Mean training loss of each device.
    """

    device_ids: tuple[int, ...]
    payload: dict[str, np.ndarray]
    num_samples: tuple[int, ...]
    mean_loss: tuple[float, ...]

    @classmethod
    def pack(cls, updates: Sequence[DeviceUpdate]) -> UpdateBatch:
        """Stack ``updates`` (at least one, all with the same payload keys)."""
        if not updates:
            raise ValueError("an UpdateBatch needs at least one update")
        keys = list(updates[0].payload)
        payload = {k: torch.stack([u.payload[k] for u in updates]).numpy() for k in keys}
        return cls(
            tuple(u.device_id for u in updates),
            payload,
            tuple(u.num_samples for u in updates),
            tuple(u.mean_loss for u in updates),
        )

    def __len__(self) -> int:
        return len(self.device_ids)

    def update(self, row: int) -> DeviceUpdate:
        """Return row ``row`` as a DeviceUpdate whose tensors view the batch's arrays."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only arrays of the object store
            payload = {k: torch.from_numpy(v[row]) for k, v in self.payload.items()}
        return DeviceUpdate(
            self.device_ids[row], payload, self.num_samples[row], self.mean_loss[row]
        )
