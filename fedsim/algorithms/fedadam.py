"""FedAdam (Reddi et al. 2021): FedAvg's devices, Adam at the cloud.

Devices run FedAvg's local SGD. At every sync the cloud averages the models as FedAvg does,
then takes the difference to the global model, Δ = mean - x, as a pseudo-gradient:

    m ← β1 m + (1 - β1) Δ,   v ← β2 v + (1 - β2) Δ²,   x ← x + η m / (√v + ε)

(Reddi et al.'s Algorithm 2: no bias correction; m and v start at 0). Adam applies to the
trainable parameters; buffers (BatchNorm's running statistics) take the mean, as under
FedAvg. MTFL's published example: client lr 0.3, server lr η 0.01, β1 0.9, β2 0.999,
ε 1e-4 (the defaults here). Edges average; only the cloud steps. m and v are part of a
checkpoint. Computed in float64 and rounded once to the model's dtype per sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from fedsim.algorithms.base import State
from fedsim.algorithms.fedavg import FedAvg, FedAvgParams
from fedsim.bounds import in_range


class FedAdamParams(FedAvgParams):
    """FedAvg's parameters plus the server's Adam.

    ``server_lr`` η in (0, 10]; ``beta1`` and ``beta2`` in [0, 1); ``eps`` in (0, 1].
    """

    server_lr: Annotated[float, in_range(0, 10, low_open=True)] = 0.01
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    eps: Annotated[float, in_range(0, 1, low_open=True)] = 1e-4


class FedAdam(FedAvg):
    """FedAvg on devices; the cloud's Adam step on the averaged update."""

    Params = FedAdamParams
    params: FedAdamParams
    server_optimizer = True

    def server_step(
        self, state: State, averaged: State, opt: State, params: Sequence[str]
    ) -> tuple[State, State]:
        """Return the global model after one Adam step on ``averaged - state``, and m, v."""
        p = self.params
        out = dict(averaged)  # buffers (and anything not trained) take the mean
        new_opt: State = {}
        for key in params:
            if key not in averaged:
                continue
            x = state[key].to(torch.float64)
            delta = averaged[key].to(torch.float64) - x
            m = opt.get(f"m.{key}", torch.zeros_like(x)).mul(p.beta1).add_(delta, alpha=1 - p.beta1)
            v = opt.get(f"v.{key}", torch.zeros_like(x)).mul(p.beta2)
            v.addcmul_(delta, delta, value=1 - p.beta2)
            step = m / (v.sqrt() + p.eps)
            out[key] = x.add(step, alpha=p.server_lr).to(state[key].dtype)  # x not changed
            new_opt[f"m.{key}"], new_opt[f"v.{key}"] = m, v
        return out, new_opt
