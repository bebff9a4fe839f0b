"""Per-FedAvg (Fallah et al. 2020): MAML-style local steps; the user model is one SGD step away.

Each local step k of a device, from its model w, draws fresh batches D1, D2 (and D3):

    temp = w - α ∇f(w; D1),   g = ∇f(temp; D2)
    first_order:   w ← w - β g
    hessian_free:  w ← w - β (g - α ∇²f(w; D3) g)

The batches come from the device's seeded batch stream, consecutive permutations of its
training rows cut into batches of ``batch_size`` (the last partial batch kept): 2 (first
order) or 3 (Hessian-free) batches a step. The number of steps K is FedAvg's number of
batches, ``local_epochs * ceil(n / batch_size)``, as the MTFL paper fixes it (section 4.4:
15 steps for MNIST with W = 200), so a round passes 2 or 3 times over the data.

The Hessian-vector product is exact by default (``delta`` None), by autograd's double
backward: the gradient of ``<∇f(w; D3), g>`` (``torch.autograd`` in the per-device loop,
``torch.func.grad`` of ``grad`` under ``vmap`` in lock-step). Exact is chosen because it
needs no δ to tune and has no cancellation error: a float32 central difference divides the
rounding noise of two gradients by 2δ. ``delta`` set gives Fallah's central difference
(∇f(w + δg; D3) - ∇f(w - δg; D3)) / (2δ) instead (it applies to ``hessian_free`` only). Both
take one batch D3.

Compute charged to the clock (:meth:`PerFedAvg.steps`): one entry per batch gradient, each
costing what a FedAvg step (a forward and a backward pass) on that batch costs. A
first-order step is 2 such gradients. A Hessian-free step is 4: the gradients on D1 and D2,
and the Hessian-vector product on D3, charged as two gradients -- exactly what the central
difference evaluates, and the arithmetic cost of an exact product (Pearlmutter 1994: a
gradient with a tangent carried through it). torch's double backward takes 2.5 to 2.8
gradients' wall time on the MNIST 2NN on one CPU thread (measured), an overhead of the
framework the simulated device is not charged for. The element-wise updates are not
charged (as FedAvg's are not), nor is the user model's step at evaluation.

Every gradient is a train-mode forward pass and updates BatchNorm's running statistics.
Servers take the plain sample-weighted mean of whole models (the default aggregate). The
user model (UA) is Per-FedAvg's personalisation: the global model after one SGD step of
size α on one batch of the device's own training rows, drawn from a seed keyed by the
device and the evaluated model (its forward pass updates the running statistics too).
MTFL's published MNIST setting (W = 200, C = 0.5): α = 0.1, β = 0.3 (the defaults; first
order is the default variant). In a trial on the MNIST 2NN, ``hessian_free`` at α = 0.1
diverged (NaN) within three rounds, at α = 0.03 it trained: (I - α∇²f) amplifies g along
directions of curvature beyond 2/α.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from fedsim.algorithms.base import State, batch_count, epoch_batches
from fedsim.algorithms.local_rule import LocalRuleAlgorithm
from fedsim.bounds import in_range
from fedsim.runtime.meta_training import Batch, Grads


class PerFedAvgParams(BaseModel):
    """Per-FedAvg's scenario parameters.

    ``alpha`` (the personal step α) and ``beta`` (the meta step β) in (0, 100];
    ``local_epochs`` 1 to 1000 and ``batch_size`` 1 to 10**6 set K and the batches as for
    FedAvg; ``variant`` ``first_order`` or ``hessian_free``; ``delta`` None (the exact
    Hessian-vector product) or the finite-difference step in (0, 1] (Hessian-free only).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    alpha: Annotated[float, in_range(0, 100, low_open=True)] = 0.1
    beta: Annotated[float, in_range(0, 100, low_open=True)] = 0.3
    local_epochs: Annotated[int, Field(gt=0, le=1000)] = 1
    batch_size: Annotated[int, Field(gt=0, le=10**6)] = 20
    variant: Literal["first_order", "hessian_free"] = "first_order"
    delta: Annotated[float, in_range(0, 1, low_open=True)] | None = None


@dataclass(frozen=True)
class PerFedAvgStep:
    """One Per-FedAvg local step (a :class:`~fedsim.runtime.meta_training.LocalRule`)."""

    alpha: float
    beta: float
    hessian_free: bool = False
    delta: float | None = None

    @property
    def batches_per_step(self) -> int:
        """Return 2 (D1, D2) or, Hessian-free, 3 (D1, D2, D3)."""
        return 3 if self.hessian_free else 2

    def start(self, w: State) -> State:
        """Return no carried values (a step depends only on the model)."""
        return {}

    def step(
        self, grads: Grads, w: State, carry: State, batches: Sequence[Batch]
    ) -> tuple[State, State, torch.Tensor]:
        """Return w after one step, and the loss of the adapted model on D2."""
        (x1, y1), (x2, y2) = batches[0], batches[1]
        g1, _ = grads.grad(w, x1, y1)
        temp = {k: w[k] - self.alpha * g1[k] for k in w}
        g, loss = grads.grad(temp, x2, y2)
        if self.hessian_free:
            x3, y3 = batches[2]
            if self.delta is None:
                hv = grads.hvp(w, g, x3, y3)
            else:
                d = self.delta
                plus, _ = grads.grad({k: w[k] + d * g[k] for k in w}, x3, y3)
                minus, _ = grads.grad({k: w[k] - d * g[k] for k in w}, x3, y3)
                hv = {k: (plus[k] - minus[k]) / (2 * d) for k in w}
            g = {k: g[k] - self.alpha * hv[k] for k in w}
        return {k: w[k] - self.beta * g[k] for k in w}, carry, loss

    def adapt(self, grads: Grads, w: State, batch: Batch) -> State:
        """Return w after one SGD step of size α on ``batch`` (the user model)."""
        g, _ = grads.grad(w, *batch)
        return {k: w[k] - self.alpha * g[k] for k in w}


class PerFedAvg(LocalRuleAlgorithm):
    """Per-FedAvg: MAML steps on devices, the plain mean at servers, one step to personalise."""

    Params = PerFedAvgParams
    params: PerFedAvgParams
    #: the adapted model ``temp`` beside w (Hessian-free also keeps g while it takes the
    #: Hessian-vector product; not counted)
    optimizer_values_per_param = 1

    @property
    def rule(self) -> PerFedAvgStep:
        """Return the local step."""
        p = self.params
        return PerFedAvgStep(p.alpha, p.beta, p.variant == "hessian_free", p.delta)

    def _stream(self, num_samples: int) -> list[int]:
        """Return the batch sizes of a round's batch stream (2 or 3 epochs per local epoch)."""
        epoch = epoch_batches(num_samples, self.params.batch_size)
        return epoch * (self.rule.batches_per_step * self.params.local_epochs)

    def steps(self, num_samples: int) -> list[int]:
        """Return one batch size per batch gradient the clock charges (module docstring).

        First order: the stream's batches, D1 and D2 of each step. Hessian-free: D1, D2, and
        D3 twice (the Hessian-vector product costs two gradients).
        """
        stream = self._stream(num_samples)
        if self.params.variant == "first_order":
            return stream
        return [b for i in range(0, len(stream), 3) for b in (*stream[i : i + 3], stream[i + 2])]

    def num_steps(self, num_samples: int) -> int:
        """Return the length of :meth:`steps`: 2 or 4 gradients for each of the K steps."""
        k = batch_count(num_samples, self.params.batch_size) * self.params.local_epochs
        return (2 if self.params.variant == "first_order" else 4) * k
