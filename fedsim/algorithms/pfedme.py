"""pFedMe (Dinh et al. 2020): personal models θ kept near w by a Moreau envelope; β-mixing.

A device starts a round from the global model w, with its personal model θ = w. For each
of R local steps (R is FedAvg's number of batches, ``local_epochs * ceil(n / batch_size)``,
as the MTFL paper fixes it) it draws the next batch of its seeded batch stream and solves
the inner problem approximately, ``inner_steps`` (K) gradient steps from the current θ:

    θ ← θ - personal_lr (∇f(θ; batch) + λ (θ - w))

then moves w towards θ: ``w ← w - η λ (w - θ)`` (η is ``lr``). θ carries over from step to
step within a round, as in Dinh et al.'s code; the device uploads w. Every gradient is a
train-mode forward pass of θ and updates BatchNorm's running statistics, which travel with w.

The cloud averages the uploads by samples (edges average as for FedAvg), then mixes:
``w_global ← (1 - β) w_global + β mean`` on the trainable parameters (running statistics
take the mean). β = 1 (the default) is the plain mean; β ≠ 1 is a server step, so it is
refused for asynchronous runs.

Compute charged to the clock (:meth:`PFedMe.steps`): K batch gradients per local step, each
costing a FedAvg step on that batch; the element-wise updates of θ and w are not charged.
With the MTFL paper's K = 1, a round costs what a FedAvg round costs.

The user model (UA) is the personal θ, recomputed at evaluation from the evaluated global
model w by the same inner solve (θ = w, K steps) on one batch of the device's training rows,
drawn from a seed keyed by the device and the evaluated model. Stateless: every device has
a user model, whether or not it trained lately; nothing needs checkpointing or survives a
host's restart on Ray; and the same evaluation gives the same θ on every runtime. (Keeping
θ from training would give never-selected devices no user model and need per-device
checkpointed state.) With K = 1 the first inner step has no proximal pull (θ = w), so the
user model is one SGD step of size ``personal_lr``.

MTFL's published MNIST setting (W = 200, C = 0.5): η = 0.1, λ = 1.0 (the defaults);
``personal_lr`` 0.1 is Dinh et al.'s MNIST value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field

from fedsim.algorithms.base import State, batch_count, epoch_batches
from fedsim.algorithms.local_rule import LocalRuleAlgorithm
from fedsim.bounds import in_range
from fedsim.runtime.meta_training import Batch, Grads


class PFedMeParams(BaseModel):
    """pFedMe's scenario parameters.

    ``lr`` (η) and ``personal_lr`` in (0, 100]; ``lam`` (λ) in (0, 1000]; ``inner_steps``
    (K) 1 to 1000; ``beta`` (the cloud's mixing weight) in (0, 10]; ``local_epochs`` 1 to
    1000 and ``batch_size`` 1 to 10**6 set R and the batches as for FedAvg.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lr: Annotated[float, in_range(0, 100, low_open=True)] = 0.1
    lam: Annotated[float, in_range(0, 1000, low_open=True)] = 1.0
    personal_lr: Annotated[float, in_range(0, 100, low_open=True)] = 0.1
    inner_steps: Annotated[int, Field(gt=0, le=1000)] = 1
    beta: Annotated[float, in_range(0, 10, low_open=True)] = 1.0
    local_epochs: Annotated[int, Field(gt=0, le=1000)] = 1
    batch_size: Annotated[int, Field(gt=0, le=10**6)] = 20


@dataclass(frozen=True)
class PFedMeStep:
    """One pFedMe local step (a :class:`~fedsim.runtime.meta_training.LocalRule`)."""

    lr: float
    lam: float
    personal_lr: float
    inner_steps: int = 1

    @property
    def batches_per_step(self) -> int:
        """Return 1: every inner step of a local step uses the same batch."""
        return 1

    def start(self, w: State) -> State:
        """Return θ = w, the personal model a round starts from."""
        return {k: v.clone() for k, v in w.items()}

    def _solve(self, grads: Grads, w: State, theta: State, batch: Batch) -> tuple[State, list]:
        losses = []
        for _ in range(self.inner_steps):
            g, loss = grads.grad(theta, *batch)
            theta = {
                k: theta[k] - self.personal_lr * (g[k] + self.lam * (theta[k] - w[k]))
                for k in theta
            }
            losses.append(loss)
        return theta, losses

    def step(
        self, grads: Grads, w: State, carry: State, batches: Sequence[Batch]
    ) -> tuple[State, State, torch.Tensor]:
        """Return w and θ after one step, and the mean batch loss of its inner steps."""
        theta, losses = self._solve(grads, w, carry, batches[0])
        pull = self.lr * self.lam
        w = {k: w[k] - pull * (w[k] - theta[k]) for k in w}
        return w, theta, torch.stack(losses).mean(0)

    def adapt(self, grads: Grads, w: State, batch: Batch) -> State:
        """Return θ from w by the inner solve on ``batch`` (the user model)."""
        return self._solve(grads, w, dict(w), batch)[0]


class PFedMe(LocalRuleAlgorithm):
    """pFedMe: bi-level local steps on devices, the mean (mixed by β) at the cloud."""

    Params = PFedMeParams
    params: PFedMeParams
    #: the personal model θ beside w
    optimizer_values_per_param = 1

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        self.server_optimizer = self.params.beta != 1.0

    @property
    def rule(self) -> PFedMeStep:
        """Return the local step."""
        p = self.params
        return PFedMeStep(p.lr, p.lam, p.personal_lr, p.inner_steps)

    def steps(self, num_samples: int) -> list[int]:
        """Return one batch size per batch gradient: each FedAvg batch ``inner_steps`` times."""
        k = self.params.inner_steps
        epoch = [b for b in epoch_batches(num_samples, self.params.batch_size) for _ in range(k)]
        return epoch * self.params.local_epochs

    def num_steps(self, num_samples: int) -> int:
        """Return the length of :meth:`steps`: ``inner_steps`` gradients for each of R steps."""
        r = batch_count(num_samples, self.params.batch_size) * self.params.local_epochs
        return self.params.inner_steps * r

    def server_step(
        self, state: State, averaged: State, opt: State, params: Sequence[str]
    ) -> tuple[State, State]:
        """Return ``(1 - β) state + β averaged`` on the parameters (float64, rounded once)."""
        beta = self.params.beta
        if beta == 1.0:
            return averaged, opt
        out = dict(averaged)  # buffers take the mean
        for key in params:
            if key in averaged:
                mixed = state[key].double() * (1 - beta) + averaged[key].double() * beta
                out[key] = mixed.to(state[key].dtype)
        return out, opt
