"""Local training of many simulated devices: the bit-exact per-device loop.

A device's job (:class:`DeviceJob`), its seeded batches (:func:`batch_order`) and its
result (:class:`DeviceResult`); :func:`train_loop` trains devices one after another. The
lock-step path, which trains many at once, is :mod:`fedsim.runtime.lock_step`; the
optimiser (SGD or Adam) is :mod:`fedsim.runtime.optim`'s, shared by both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim.runtime.batchnorm import has_batchnorm
from fedsim.runtime.optim import (
    LocalAdam,
    LocalSGD,
    model_part,
)

__all__ = [
    "DeviceJob",
    "DeviceResult",
    "LocalAdam",
    "LocalSGD",
    "batch_order",
    "has_batchnorm",
    "train_loop",
]

State = dict[str, Tensor]


@dataclass(frozen=True)
class DeviceJob:
    """One device's share of a host call.

    Attributes
    ----------
    device_id : int
        The device id.
    train_idx : numpy.ndarray
        int64 indices of the device's training rows in the host's ``x``/``y``.
    seed : int
        Per-device-per-round seed, already keyed by the caller.
    base : dict of str to torch.Tensor or None
        The device's starting model, when it is not the call's ``global_state`` (an
        asynchronous device trains from the version it downloaded).
    """

    device_id: int
    train_idx: np.ndarray
    seed: int
    base: State | None = None


@dataclass
class DeviceResult:
    """A device's trained model and its training statistics.

    Attributes
    ----------
    device_id : int
        The device id.
    state : dict of str to torch.Tensor
        The new ``state_dict`` (parameters and buffers). :func:`train_loop` gives tensors
        owning their storage; :func:`train_vectorized` gives views into the stacked tensors
        of the device's chunk (no per-device copy; the chunk's storage lives as long as any
        of its devices' states).
    num_samples : int
        Number of training samples of the device.
    num_steps : int
        Number of SGD steps taken.
    mean_loss : float
        Mean over steps of the batch loss (NaN when no step was taken).
    """

    device_id: int
    state: State
    num_samples: int
    num_steps: int
    mean_loss: float


def batch_order(
    num_samples: int,
    batch_size: int,
    local_epochs: int,
    seed: int,
    *,
    drop_singleton: bool = False,
) -> list[np.ndarray]:
    """Return the positions (into the device's samples) of every local batch, in order.

    One ``numpy.random.default_rng(seed)`` per job draws one permutation per epoch; each
    permutation is cut into consecutive batches of ``batch_size`` and the last partial batch
    is kept.

    Parameters
    ----------
    num_samples : int
        Number of training samples of the device.
    batch_size : int
        Samples per batch.
    local_epochs : int
        Number of epochs.
    seed : int
        The job's seed.
    drop_singleton : bool
        Drop an epoch's trailing partial batch when it holds a single sample. Set it for
        models with BatchNorm: batch statistics of one sample are undefined (torch raises for
        ``BatchNorm1d`` in train mode) and the unbiased running variance would divide by 0.

    Returns
    -------
    list of numpy.ndarray
        int64 positions in ``range(num_samples)``, one array per step.
    """
    if batch_size < 1 or local_epochs < 0 or num_samples < 0:
        raise ValueError(
            f"need batch_size >= 1, local_epochs >= 0, num_samples >= 0; got "
            f"{batch_size}, {local_epochs}, {num_samples}"
        )
    rng = np.random.default_rng(seed)
    batches: list[np.ndarray] = []
    for _ in range(local_epochs):
        perm = rng.permutation(num_samples).astype(np.int64, copy=False)
        for start in range(0, num_samples, batch_size):
            batch = perm[start : start + batch_size]
            if drop_singleton and len(batch) == 1 and batch_size > 1:
                continue
            batches.append(batch)
    return batches


def check_batchnorm(model: nn.Module, batch_size: int) -> bool:
    """Return whether ``model`` has BatchNorm, refusing batches of one sample with it."""
    bn = has_batchnorm(model)
    if bn and batch_size == 1:
        raise ValueError("batch_size 1 is not supported for models with BatchNorm")
    return bn


def device_batches(job: DeviceJob, batch_size: int, epochs: int, bn: bool) -> list[np.ndarray]:
    """Return a device's batches (rows of the host's data): ``epochs`` seeded permutations.

    The batches of :func:`batch_order` (an epoch's single-sample last batch dropped when
    the model has BatchNorm, ``bn``), mapped to the device's rows.
    """
    idx = np.asarray(job.train_idx, dtype=np.int64)
    order = batch_order(len(idx), batch_size, epochs, job.seed, drop_singleton=bn)
    return [idx[b] for b in order]


def _owned(state: State) -> State:
    return {k: v.detach().clone() for k, v in state.items()}


# ----------------------------------------------------------------------------------------
# Reference: one device after another
# ----------------------------------------------------------------------------------------


def train_loop(
    model: nn.Module,
    global_state: State,
    x: Tensor,
    y: Tensor,
    jobs: Sequence[DeviceJob],
    opt: LocalSGD,
) -> list[DeviceResult]:
    """Train each device in turn from ``global_state`` (the bit-exact reference).

    For every job the model is loaded with ``global_state``, put in train mode and trained by
    ``opt`` (plain SGD, ``p -= lr * grad``, or Adam, :mod:`fedsim.runtime.optim`) on
    cross-entropy averaged over each batch of :func:`batch_order`. Optimiser values start
    from the ``optim/`` entries of the device's starting state (zeros where it has none)
    and are returned in the result's state. A device's result depends only on
    ``global_state``, its data and its seed, never on the other jobs of the call, and is
    bit-identical across calls.

    Parameters
    ----------
    model : torch.nn.Module
        Scratch model of the right architecture; it is left holding the last device's state.
    global_state : dict of str to torch.Tensor
        The starting ``state_dict`` of every device (not modified).
    x, y : torch.Tensor
        The host's samples (float) and labels (int64); jobs index rows of them.
    jobs : sequence of DeviceJob
        The devices to train.
    opt : LocalSGD
        Optimiser settings.

    Returns
    -------
    list of DeviceResult
        One result per job, in the order of ``jobs``.
    """
    bn = check_batchnorm(model, opt.batch_size)
    model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    results = []
    for job in jobs:
        start = global_state if job.base is None else job.base
        model.load_state_dict(model_part(start))
        opt_state = _optimizer_state(opt, start, list(params))
        batches = device_batches(job, opt.batch_size, opt.local_epochs, bn)
        losses = []
        for b in batches:
            bt = torch.from_numpy(b)
            for p in params.values():
                p.grad = None
            loss = F.cross_entropy(model(x[bt]), y[bt])
            loss.backward()
            with torch.no_grad():
                grads = {n: p.grad for n, p in params.items() if p.grad is not None}
                opt.step(params, grads, opt_state)
            losses.append(loss.detach())
        mean_loss = float(torch.stack(losses).double().mean()) if losses else math.nan
        results.append(
            DeviceResult(
                device_id=job.device_id,
                state=_owned(model.state_dict()) | opt_state,
                num_samples=len(job.train_idx),
                num_steps=len(batches),
                mean_loss=mean_loss,
            )
        )
    return results


def _optimizer_state(opt: LocalSGD, start: State, params: Sequence[str]) -> State:
    """Return the device's own copy of its optimiser values (fresh where ``start`` has none)."""
    fresh = opt.fresh_state(start, params)
    return {k: start[k].detach().clone() if k in start else v for k, v in fresh.items()}
