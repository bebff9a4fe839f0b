"""FTL, federated transfer learning by fine-tuning (PerFit Fig. 2a).

Training is FedAvg. Each device's user model (UA) is the global model fine-tuned on the
device's own training rows: ``tune_epochs`` passes of plain SGD (``tune_lr``,
``tune_batch_size``) on the parameters of ``tune_layers`` only (by default the model's last
module with parameters); every other value -- frozen weights and the running statistics of
frozen BatchNorm layers -- stays exactly the global model's. Frozen BatchNorm layers
normalise with batch statistics during fine-tuning (the model is in train mode), as
``torch`` does unless told otherwise.

The fine-tuning is stateless and seeded (``Algorithm.personalise``): the same evaluation of
the same model gives the same user model on any runtime and after a resume. It is a
measurement at each evaluation -- what each device would get by fine-tuning now. The
fine-tuning after the last round is charged to the clock and the devices' energy by the
personalisation stage (:mod:`fedsim.sim.personalisation`: ``personalisation.csv`` and the
summary's ``personalisation_s``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from fedsim.algorithms.base import State, epoch_batches
from fedsim.algorithms.fedavg import FedAvg, FedAvgParams
from fedsim.algorithms.fedper import last_layer
from fedsim.algorithms.private import private_keys
from fedsim.bounds import in_range
from fedsim.runtime.training import DeviceJob, LocalSGD, train_loop


class FTLParams(FedAvgParams):
    """FTL's parameters: FedAvg's for training, and the fine-tuning's.

    ``tune_layers``: module names whose parameters are fine-tuned (empty: the model's last
    module with parameters); ``tune_epochs`` 1 to 1000; ``tune_lr`` in (0, 100] (None:
    ``lr``); ``tune_batch_size`` 1 to 10**6 (None: ``batch_size``).
    """

    tune_layers: list[str] = Field(default_factory=list)
    tune_epochs: Annotated[int, Field(gt=0, le=1000)] = 1
    tune_lr: Annotated[float, in_range(0, 100, low_open=True)] | None = None
    tune_batch_size: Annotated[int, Field(gt=0, le=10**6)] | None = None


class FTL(FedAvg):
    """FedAvg, with each device's user model fine-tuned on its own data."""

    Params = FTLParams
    params: FTLParams
    #: every value of the tuned layers: their parameters are fine-tuned (see bind)
    _tuned: frozenset[str] = frozenset()

    def bind(self, model: torch.nn.Module) -> None:
        """Learn the private keys (as FedAvg) and the tuned ones (refusing unknown layers)."""
        super().bind(model)
        layers = self.params.tune_layers or [last_layer(model)]
        try:
            tuned = private_keys(model, "none", layers)
        except ValueError as exc:
            raise ValueError(str(exc).replace("private_layers", "tune_layers", 1)) from None
        self._tuned = tuned

    def _tune_optimizer(self) -> LocalSGD:
        p = self.params
        return LocalSGD(
            lr=p.tune_lr or p.lr,
            local_epochs=p.tune_epochs,
            batch_size=p.tune_batch_size or p.batch_size,
        )

    def personalisation_steps(self, num_samples: int) -> list[int]:
        """Return the fine-tuning's steps: ``tune_epochs`` passes of ``tune_batch_size``."""
        opt = self._tune_optimizer()
        return epoch_batches(num_samples, opt.batch_size) * opt.local_epochs

    def personalise(
        self,
        model: torch.nn.Module,
        state: State,
        x: torch.Tensor,
        y: torch.Tensor,
        train_idx: np.ndarray,
        seed: int,
    ) -> State | None:
        """Return ``state`` with the tuned layers fine-tuned on the device's rows."""
        if len(train_idx) == 0:
            return None
        opt = self._tune_optimizer()
        frozen = [q for n, q in model.named_parameters() if n not in self._tuned]
        for q in frozen:
            q.requires_grad_(False)
        try:
            job = DeviceJob(-1, train_idx, seed, None)
            (result,) = train_loop(model, state, x, y, [job], opt)
        finally:
            for q in frozen:
                q.requires_grad_(True)
        return {k: (result.state[k] if k in self._tuned else v) for k, v in state.items()}
