"""One message for all the updates of a host call: numpy arrays that Ray moves zero-copy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedsim.algorithms.base import DeviceUpdate


def shared_tensor(array: np.ndarray) -> torch.Tensor:
    """Wrap a (possibly read-only, shared-memory) array without copying it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only arrays from the object store
        return torch.from_numpy(array)


@dataclass(frozen=True)
class UpdateBatch:
    """The updates of one host call (row ``i`` is device ``device_ids[i]``).

    Payload tensors travel as numpy arrays, which Ray stores out of band in its shared-memory
    object store: packing copies nothing (the arrays view the trainer's tensors), Ray copies
    each array once into the store, and an edge actor reads them without a copy. One object
    per host call instead of one per device also keeps Ray's per-object bookkeeping small.

    Attributes
    ----------
    device_ids : tuple of int
        The devices, in the order of the host call.
    payloads : tuple of dict of str to numpy.ndarray
        Each device's payload tensors, as arrays.
    num_samples : tuple of int
        Aggregation weight (training samples) of each device.
    mean_loss : tuple of float
        Mean training loss of each device.
    """

    device_ids: tuple[int, ...]
    payloads: tuple[dict[str, np.ndarray], ...]
    num_samples: tuple[int, ...]
    mean_loss: tuple[float, ...]

    @classmethod
    def pack(cls, updates: Sequence[DeviceUpdate]) -> UpdateBatch:
        """Wrap ``updates`` (at least one) without copying their tensors."""
        if not updates:
            raise ValueError("an UpdateBatch needs at least one update")
        return cls(
            tuple(u.device_id for u in updates),
            tuple({k: v.detach().numpy() for k, v in u.payload.items()} for u in updates),
            tuple(u.num_samples for u in updates),
            tuple(u.mean_loss for u in updates),
        )

    def __len__(self) -> int:
        return len(self.device_ids)

    def update(self, row: int) -> DeviceUpdate:
        """Return row ``row`` as a DeviceUpdate whose tensors view the batch's arrays."""
        payload = {k: shared_tensor(v) for k, v in self.payloads[row].items()}
        return DeviceUpdate(
            self.device_ids[row], payload, self.num_samples[row], self.mean_loss[row]
        )
