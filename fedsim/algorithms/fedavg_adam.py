"""FedAvg-Adam (MTFL, Mills et al. 2022): Adam on devices; models and Adam moments averaged.

Each device downloads the global model *and* the global Adam state (first and second moments
per trainable parameter, and the step count), runs Adam (:class:`fedsim.runtime.optim.
LocalAdam`) over its local batches, and uploads its model and its Adam state; edges and the
cloud average all of them, sample-weighted, like FedAvg's models. The upload (and download)
is therefore about 3 × FedAvg's: the model, m and v (plus BatchNorm buffers once, and an
8-byte step count).

With MTFL's private patches (``private``), a private parameter's moments stay private too:
the device keeps its own optimiser values for its patch, as MTFL's Algorithm 1 keeps the
patch layers' optimiser values (lines 7–13). MTFL's published example (CIFAR-10): client
lr 0.003, β1 0.9, β2 0.999, ε 1e-7 (the defaults here).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from fedsim.algorithms.base import State
from fedsim.algorithms.fedavg import FedAvg, FedAvgParams
from fedsim.bounds import in_range
from fedsim.runtime.optim import LocalAdam, moment_keys


class FedAvgAdamParams(FedAvgParams):
    """FedAvg's parameters with the devices' Adam.

    ``lr`` (Adam's step size; default 0.003); ``beta1`` and ``beta2`` in [0, 1); ``eps`` in
    (0, 1].
    """

    lr: Annotated[float, in_range(0, 100, low_open=True)] = 0.003
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    eps: Annotated[float, in_range(0, 1, low_open=True)] = 1e-7


class FedAvgAdam(FedAvg):
    """Adam on devices; servers average the models and the Adam moments."""

    Params = FedAvgAdamParams
    params: FedAvgAdamParams
    optimizer_values_per_param = 2

    @property
    def optimizer(self) -> LocalAdam:
        """Return the devices' Adam settings."""
        p = self.params
        return LocalAdam(
            lr=p.lr, local_epochs=p.local_epochs, batch_size=p.batch_size,
            beta1=p.beta1, beta2=p.beta2, eps=p.eps,
        )  # fmt: skip

    def bind(self, model: torch.nn.Module) -> None:
        """Learn the private keys: FedAvg's, and the moments of every private parameter."""
        super().bind(model)
        params = {n for n, p in model.named_parameters() if p.requires_grad}
        moments = {k for n in self.private & params for k in moment_keys(n)}
        self.private = self.private | moments

    def initial_state(self, model: torch.nn.Module) -> State:
        """Return the model's values with zero moments and a step count of 0."""
        state = super().initial_state(model)
        params = [n for n, p in model.named_parameters() if p.requires_grad]
        return state | self.optimizer.fresh_state(state, params)
