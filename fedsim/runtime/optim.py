"""Devices' local optimisers: plain SGD and Adam, one step on plain or stacked tensors.

A device's optimiser state travels inside its model state under keys that start with
:data:`OPT_PREFIX` (Adam's first and second moments per trainable parameter, and the step
count), so servers average it like any other value (FedAvg-Adam) and private patches keep
their own (MTFL). :func:`model_part` strips those keys before a state meets ``nn.Module``.

The same update functions serve the per-device loop (a parameter of shape ``S``, a 0-d
step count) and lock-step training (a stacked ``(D, *S)`` parameter, a ``(D,)`` step count):
the arithmetic is elementwise with the same operations, so the two agree to the rounding of
the gradients they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

State = dict[str, Tensor]

#: Prefix of optimiser values in a state dict (``torch`` module keys never contain ``/``).
OPT_PREFIX = "optim/"
#: Adam's step count: float64, averaged by servers like the moments.
STEP_KEY = "optim/step"
#: Elements per device a stacked tensor needs to be stepped whole: a multiple of every
#: vector width of ATen's CPU kernels (16 floats on AVX-512; 64 covers SVE up to 2048 bits).
VECTOR_ALIGN = 64


def moment_keys(name: str) -> tuple[str, str]:
    """Return the state keys of Adam's first and second moments of parameter ``name``."""
    return f"{OPT_PREFIX}m/{name}", f"{OPT_PREFIX}v/{name}"


def model_part(state: Mapping[str, Tensor]) -> State:
    """Return the entries of ``state`` that belong to the model.

    Values an algorithm adds to a state (the optimiser's under :data:`OPT_PREFIX`,
    federated distillation's ``fd/`` consensus) are named with a ``/``, which no ``torch``
    module key holds; they are left out.
    """
    return {k: v for k, v in state.items() if "/" not in k}


@dataclass(frozen=True)
class LocalSGD:
    """Plain local SGD: no momentum, no weight decay, cross-entropy averaged over the batch.

    Attributes
    ----------
    lr : float
        Learning rate.
    local_epochs : int
        Passes over the device's training samples per round (E).
    batch_size : int
        Samples per step (B); each epoch's last partial batch is kept.
    """

    lr: float
    local_epochs: int
    batch_size: int

    def fresh_state(self, model_state: Mapping[str, Tensor], params: Sequence[str]) -> State:
        """Return the optimiser values of a device that has none yet (SGD keeps none)."""
        return {}

    def step(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: State) -> None:
        """Apply one step in place to ``params`` (and to the optimiser values in ``state``)."""
        self.stepper(params, grads, state)()

    def stepper(
        self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: State
    ) -> Callable[[], None]:
        """Return a function that applies one step with the values ``grads`` holds when called.

        For a training loop that refills the same gradient buffers every step: the work of
        pairing tensors is done once. SGD: ``p -= lr * g`` for every parameter with a gradient.
        """
        pairs = [(p, grads[name]) for name, p in params.items() if name in grads]

        def sgd_step() -> None:
            for p, g in pairs:
                p.sub_(self.lr * g)

        return sgd_step


@dataclass(frozen=True)
class LocalAdam(LocalSGD):
    """Adam on devices (Kingma and Ba), by the kernel of ``torch.optim.Adam(fused=True)``.

    Per step t (counted in ``state[STEP_KEY]``, incremented first): m ← β1 m + (1 − β1) g,
    v ← β2 v + (1 − β2) g², p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε); no weight
    decay. m, v and t start from the downloaded state (FedAvg-Adam averages them at the
    servers); t is then a mean of step counts, not always an integer, and the bias
    corrections take it as it is (rounded to float32, as torch keeps its step).

    One fused pass per tensor reads p, g, m, v and writes p, m, v (4–5× faster than the same
    arithmetic as separate tensor operations on the lock-step workload). A device's update
    is the same computation whether it is trained alone or stacked: the kernel is
    elementwise and vectorised, with a scalar tail only at the end of each tensor it is
    given. Stacked devices whose step counts are all equal pass each parameter whose
    per-device size is a multiple of :data:`VECTOR_ALIGN` elements as one tensor (no device
    has a tail there, alone or stacked; about twice as fast as one tensor per device); the
    rest, and chunks with different step counts, go one tensor per device.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7

    def fresh_state(self, model_state: Mapping[str, Tensor], params: Sequence[str]) -> State:
        """Return zero moments for every parameter of ``params`` and a float64 step count 0."""
        out: State = {}
        for name in params:
            m_key, v_key = moment_keys(name)
            out[m_key] = torch.zeros_like(model_state[name])
            out[v_key] = torch.zeros_like(model_state[name])
        out[STEP_KEY] = torch.zeros((), dtype=torch.float64)
        return out

    def stepper(
        self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: State
    ) -> Callable[[], None]:
        """Return a function that applies one Adam step with the values ``grads`` holds then.

        Each call increments the step count, then updates ``params`` and the moments in
        ``state`` in place. The step counts of stacked devices all advance by one, so
        whether they are equal is decided once.
        """
        t = state[STEP_KEY]
        steps = t.to(torch.float32)
        stacked = t.dim() > 0
        same_step = stacked and bool((steps == steps[0]).all())
        lists: list[list[Tensor]] = [[], [], [], [], []]
        for name in (n for n in params if n in grads):
            m_key, v_key = moment_keys(name)
            row = (params[name], grads[name], state[m_key], state[v_key], steps)
            if not stacked or (same_step and row[0][0].numel() % VECTOR_ALIGN == 0):
                for out, value in zip(lists[:4], row[:4], strict=True):
                    out.append(value)
                lists[4].append(steps[0] if stacked else steps)
                continue
            for i in range(t.numel()):
                for out, value in zip(lists, row, strict=True):
                    out.append(value[i])
        p, g, m, v, st = lists

        def adam_step() -> None:
            t.add_(1)
            steps.copy_(t)
            torch._fused_adam_(
                p, g, m, v, [], st, amsgrad=False, lr=self.lr, beta1=self.beta1,
                beta2=self.beta2, weight_decay=0.0, eps=self.eps, maximize=False,
                grad_scale=None, found_inf=None,
            )  # fmt: skip

        return adam_step
