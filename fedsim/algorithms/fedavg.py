"""FedAvg (McMahan et al. 2017): local SGD on devices, sample-weighted averaging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field

from fedsim.algorithms.base import (
    Algorithm,
    DeviceTask,
    DeviceUpdate,
    State,
    batch_count,
    epoch_batches,
)
from fedsim.algorithms.private import Private, private_keys
from fedsim.bounds import in_range
from fedsim.runtime.lock_step import train_vectorized
from fedsim.runtime.training import DeviceJob, LocalSGD, train_loop


class FedAvgParams(BaseModel):
    """FedAvg's scenario parameters.

    Ranges: ``lr`` in (0, 100] (SGD step sizes in practice are 1e-4 to 1; far beyond,
    the weights overflow float32); ``local_epochs`` 1 to 1000; ``batch_size`` 1 to 10**6.
    ``private`` and ``private_layers``: the values that stay on devices (MTFL's BatchNorm
    patches, FedPer's personal layers; :mod:`fedsim.algorithms.private`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lr: Annotated[float, in_range(0, 100, low_open=True)] = 0.1
    local_epochs: Annotated[int, Field(gt=0, le=1000)] = 1
    batch_size: Annotated[int, Field(gt=0, le=10**6)] = 20
    private: Private = "none"
    private_layers: list[str] = Field(default_factory=list)


class FedAvg(Algorithm):
    """Plain FedAvg: devices run SGD from the model they downloaded; servers average."""

    Params = FedAvgParams
    params: FedAvgParams

    def bind(self, model: torch.nn.Module) -> None:
        """Learn the model's private keys from ``private`` and ``private_layers``."""
        self.private = private_keys(model, self.params.private, self.params.private_layers)

    @property
    def optimizer(self) -> LocalSGD:
        """Return the local optimiser settings (plain SGD)."""
        p = self.params
        return LocalSGD(lr=p.lr, local_epochs=p.local_epochs, batch_size=p.batch_size)

    def steps(self, num_samples: int) -> list[int]:
        """Return ``local_epochs`` passes of full batches plus the last partial one."""
        return epoch_batches(num_samples, self.params.batch_size) * self.params.local_epochs

    def largest_batch(self, num_samples: int) -> int:
        """Return ``min(batch_size, num_samples)`` (1 when there are no samples)."""
        return min(self.params.batch_size, num_samples) or 1

    def num_steps(self, num_samples: int) -> int:
        """Return ``local_epochs * ceil(num_samples / batch_size)`` (without the list)."""
        return batch_count(num_samples, self.params.batch_size) * self.params.local_epochs

    def train(
        self,
        model: torch.nn.Module,
        base: State,
        x: torch.Tensor,
        y: torch.Tensor,
        tasks: Sequence[DeviceTask],
        vectorize: bool,
    ) -> list[DeviceUpdate]:
        """Run the local optimiser for each device (lock-step batched when ``vectorize``)."""
        jobs = [DeviceJob(t.device_id, t.train_idx, t.seed, t.base) for t in tasks]
        trainer = train_vectorized if vectorize else train_loop
        return self.updates(base, trainer(model, base, x, y, jobs, self.optimizer))
