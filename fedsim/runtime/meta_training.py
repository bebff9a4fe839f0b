"""Local training by gradient rules beyond SGD (Per-FedAvg, pFedMe): per device and in lock-step.

A rule (:class:`LocalRule`) says what one local step does with a few batch gradients; a
gradient source (:class:`Grads`) computes them. The per-device loop's source is plain
``torch.autograd`` on the model (the reference); the lock-step source is
``torch.func.vmap`` over the devices' stacked parameters. A rule's arithmetic is elementwise
and the same for both (a parameter of shape ``S`` or a stacked ``(D, *S)`` one), so the two
paths agree to the rounding of the gradients. Every gradient is a forward pass in train mode,
and each one updates BatchNorm's running statistics, in the loop as in lock-step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fedsim.runtime.grouped import min_chunk
from fedsim.runtime.lock_step import DEFAULT_GROUP_SIZE, lock_step_chunks, stacked_states, step_rows
from fedsim.runtime.training import DeviceJob, DeviceResult, check_batchnorm, device_batches
from fedsim.runtime.vmapped import stat_loss

State = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]


class Grads(Protocol):
    """Batch gradients of the cross-entropy at given parameters (one device or stacked)."""

    def grad(self, params: State, xb: Tensor, yb: Tensor) -> tuple[State, Tensor]:
        """Return the gradient at ``params`` on the batch and the batch loss."""

    def hvp(self, params: State, v: State, xb: Tensor, yb: Tensor) -> State:
        """Return the Hessian at ``params`` on the batch times ``v`` (exact, by autograd)."""


class LocalRule(Protocol):
    """One local step of an algorithm, from the gradients of ``batches_per_step`` batches."""

    @property
    def batches_per_step(self) -> int:
        """Return how many batches one step draws from the device's batch stream."""

    def start(self, w: State) -> State:
        """Return the rule's own values at the start of a round (carried across steps)."""

    def step(
        self, grads: Grads, w: State, carry: State, batches: Sequence[Batch]
    ) -> tuple[State, State, Tensor]:
        """Return the new parameters, the new carried values and the step's loss."""

    def adapt(self, grads: Grads, w: State, batch: Batch) -> State:
        """Return the user model's parameters made from ``w`` on one batch."""


# ----------------------------------------------------------------------------------------
# Gradient sources
# ----------------------------------------------------------------------------------------


class ModuleGrads:
    """One device's gradients by ``torch.autograd`` on the model in train mode (the reference).

    Parameters go in through ``functional_call``; the module's own buffers are used, so each
    forward updates its BatchNorm running statistics as ``nn.Module`` training does.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.train()

    def _loss(self, params: State, xb: Tensor, yb: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        return leaves, F.cross_entropy(functional_call(self.model, leaves, (xb,)), yb)

    def grad(self, params: State, xb: Tensor, yb: Tensor) -> tuple[State, Tensor]:
        """Return the gradient at ``params`` on the batch and the batch loss."""
        leaves, loss = self._loss(params, xb, yb)
        gs = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, gs, strict=True)), loss.detach()

    def hvp(self, params: State, v: State, xb: Tensor, yb: Tensor) -> State:
        """Return the Hessian-vector product by double backward (one forward pass)."""
        leaves, loss = self._loss(params, xb, yb)
        ps = list(leaves.values())
        gs = torch.autograd.grad(loss, ps, create_graph=True)
        hv = torch.autograd.grad(
            gs, ps, grad_outputs=[v[k] for k in leaves], allow_unused=True, materialize_grads=True
        )
        return dict(zip(leaves, (h.detach() for h in hv), strict=True))


class StackedGrads:
    """Many devices' gradients at once: ``vmap`` over stacked parameters and batches.

    BatchNorm layers run on batch statistics (``_StatBN``, as in ``train_vectorized``);
    every call then updates the stacked running statistics, as the loop's forward does.
    ``hvp`` is the gradient of ``<grad, v>`` (double backward, as in the loop; one forward
    pass). Forward-over-reverse (``jvp`` of ``grad``) would do as well, but torch loads its
    forward-mode decompositions through the deprecated ``torch.jit.script``.
    """

    def __init__(self, model: nn.Module) -> None:
        f = stat_loss(model, "lock-step training")
        self._f = f
        self.param_names = f.param_names
        self.stacked: State = {}
        grad_fn = grad(f.loss, has_aux=True)

        def dot_fn(params: State, v: State, buffers: State, xb: Tensor, yb: Tensor) -> Any:
            g, aux = grad_fn(params, buffers, xb, yb)
            return sum((g[k] * v[k]).sum() for k in g), aux  # its gradient is H v

        self._grad: Callable[..., Any] = vmap(grad_fn, randomness="error")
        self._hvp: Callable[..., Any] = vmap(grad(dot_fn, has_aux=True), randomness="error")

    def bind(self, stacked: State) -> None:
        """Use ``stacked`` (updated in place) for buffers and running statistics."""
        self.stacked = stacked
        self._buffers = self._f.buffers(stacked)

    def grad(self, params: State, xb: Tensor, yb: Tensor) -> tuple[State, Tensor]:
        """Return every device's gradient and batch loss (shape ``(D,)``)."""
        grads, (loss, stats) = self._grad(params, self._buffers, xb, yb)
        self._f.record(self.stacked, stats)
        return grads, loss

    def hvp(self, params: State, v: State, xb: Tensor, yb: Tensor) -> State:
        """Return every device's Hessian-vector product."""
        hv, (_, stats) = self._hvp(params, v, self._buffers, xb, yb)
        self._f.record(self.stacked, stats)
        return dict(hv)


# ----------------------------------------------------------------------------------------
# Drivers
# ----------------------------------------------------------------------------------------


def _steps(rows: list[Tensor], rule: LocalRule) -> list[list[Tensor]]:
    """Cut a device's (or a chunk's) batch rows into the groups of one step each."""
    m = rule.batches_per_step
    assert len(rows) % m == 0, "a stream of whole epochs holds whole steps"
    return [rows[s : s + m] for s in range(0, len(rows), m)]


def train_loop(
    model: nn.Module,
    global_state: State,
    x: Tensor,
    y: Tensor,
    jobs: Sequence[DeviceJob],
    rule: LocalRule,
    batch_size: int,
    epochs: int,
) -> list[DeviceResult]:
    """Train each device in turn by ``rule`` (the reference for :func:`train_lock_step`).

    A device's batches are :func:`device_batches` over ``epochs * rule.batches_per_step`` epochs,
    taken ``rule.batches_per_step`` at a time, one group per step. Results own their storage.
    """
    bn = check_batchnorm(model, batch_size)
    grads = ModuleGrads(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    results = []
    for job in jobs:
        start = global_state if job.base is None else job.base
        model.load_state_dict(start)
        w = {n: start[n].detach().clone() for n in names}
        carry = rule.start(w)
        batches = device_batches(job, batch_size, epochs * rule.batches_per_step, bn)
        rows = [torch.from_numpy(b) for b in batches]
        losses = []
        for group in _steps(rows, rule):
            w, carry, loss = rule.step(grads, w, carry, [(x[r], y[r]) for r in group])
            losses.append(loss)
        mean_loss = float(torch.stack(losses).double().mean()) if losses else math.nan
        state = {k: w.get(k, v).detach().clone() for k, v in model.state_dict().items()}
        results.append(
            DeviceResult(job.device_id, state, len(job.train_idx), len(losses), mean_loss)
        )
    return results


def train_lock_step(
    model: nn.Module,
    global_state: State,
    x: Tensor,
    y: Tensor,
    jobs: Sequence[DeviceJob],
    rule: LocalRule,
    batch_size: int,
    epochs: int,
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> list[DeviceResult]:
    """Train the devices by ``rule`` in lock-step; equal to :func:`train_loop` to rounding.

    Grouped and chunked as :func:`fedsim.runtime.lock_step.train_vectorized` does: by the
    sequence of batch sizes, in device-id order, at most ``group_size`` devices a chunk, a
    small chunk padded with copies (to 2 devices, more for some conv models:
    :func:`~fedsim.runtime.grouped.min_chunk`), so its bits do not depend on its company.
    Results are views into their chunk's stacked tensors.
    """
    bn = check_batchnorm(model, batch_size)
    state = {k: v.detach() for k, v in global_state.items()}
    grads = StackedGrads(model)
    per_job = [device_batches(job, batch_size, epochs * rule.batches_per_step, bn) for job in jobs]
    results: list[DeviceResult | None] = [None] * len(jobs)
    for _, chunk, padded in lock_step_chunks(jobs, per_job, group_size, min_chunk(model)):
        stacked = stacked_states(state, [jobs[j].base for j in padded])
        grads.bind(stacked)
        w = {n: stacked[n] for n in grads.param_names}
        carry = rule.start(w)
        rows = step_rows(per_job, padded)
        losses = []
        for group in _steps(rows, rule):  # gathered step by step, used while cache-hot
            w, carry, loss = rule.step(grads, w, carry, [(x[r], y[r]) for r in group])
            losses.append(loss)
        stacked.update(w)
        mean_losses = (
            torch.stack(losses).double().mean(0).tolist() if losses else [math.nan] * len(padded)
        )
        for i, j in enumerate(chunk):
            results[j] = DeviceResult(
                jobs[j].device_id, {k: v[i] for k, v in stacked.items()},
                len(jobs[j].train_idx), len(losses), mean_losses[i],
            )  # fmt: skip
    return [r for r in results if r is not None]


def user_model(
    model: nn.Module,
    state: State,
    x: Tensor,
    y: Tensor,
    train_idx: np.ndarray,
    seed: int,
    rule: LocalRule,
    batch_size: int,
) -> State:
    """Return a device's user model: ``rule.adapt`` of ``state`` on one of its batches.

    The batch is the first of a permutation of the device's training rows drawn from
    ``seed``; its forward passes update BatchNorm's running statistics (train mode). A
    device without a batch (no rows; one row and BatchNorm) keeps ``state``.
    """
    bn = check_batchnorm(model, batch_size)
    rows = device_batches(DeviceJob(-1, train_idx, seed), batch_size, 1, bn)
    if not rows:
        return state
    model.load_state_dict(state)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    r = torch.from_numpy(rows[0])
    w = rule.adapt(ModuleGrads(model), {n: state[n] for n in names}, (x[r], y[r]))
    return {k: w.get(k, v).detach().clone() for k, v in model.state_dict().items()}
