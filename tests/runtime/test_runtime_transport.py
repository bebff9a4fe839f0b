"""Packing a host call's updates into one stacked message and reading them back."""

from __future__ import annotations

import pickle

import pytest
import torch

from fedsim.algorithms.base import DeviceUpdate
from fedsim.runtime.transport import UpdateBatch


def _update(d: int) -> DeviceUpdate:
    g = torch.Generator().manual_seed(d)
    payload = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    return DeviceUpdate(d, payload, 10 + d, 0.5 * d)


def test_pack_and_read_back_bit_for_bit_through_pickle() -> None:
    updates = [_update(d) for d in (7, 2, 9)]
    stacked = torch.stack([updates[0].payload["w"], updates[1].payload["w"]])
    updates[1] = DeviceUpdate(2, {**updates[1].payload, "w": stacked[1]}, 12, 1.0)  # a view
    batch = pickle.loads(pickle.dumps(UpdateBatch.pack(updates), protocol=5))
    assert len(batch) == 3 and batch.payloads[1]["w"].shape == (3, 4)
    for row, u in enumerate(updates):
        got = batch.update(row)
        assert (got.device_id, got.num_samples, got.mean_loss) == (
            u.device_id, u.num_samples, u.mean_loss,
        )  # fmt: skip
        assert all(torch.equal(got.payload[k], u.payload[k]) for k in u.payload)


def test_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        UpdateBatch.pack([])
