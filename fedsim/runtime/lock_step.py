"""Lock-step training: many devices' states stacked, one batched computation per step.

The same semantics as the per-device loop of :mod:`fedsim.runtime.training` (same batches,
same optimiser, same BatchNorm running statistics), equal to it up to floating-point
rounding, by the hand-fused MLP kernels of :mod:`fedsim.runtime.fused`, the grouped
convolutions of :mod:`fedsim.runtime.grouped` (conv chains) or ``torch.func.vmap``
(anything else). Its chunking (:func:`lock_step_chunks`) makes a device's bits independent
of the devices it is trained with.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from fedsim.runtime.fused import _fused_plan, _fused_train
from fedsim.runtime.grouped import _grouped_train, conv_threads, grouped_chain, min_chunk
from fedsim.runtime.optim import LocalSGD
from fedsim.runtime.training import (
    DeviceJob,
    DeviceResult,
    State,
    check_batchnorm,
    device_batches,
)
from fedsim.runtime.vmapped import _vmap_train

#: Devices trained together in one batched computation, at most (chunks are cut in device-id
#: order inside each group of identical step signature).
DEFAULT_GROUP_SIZE = 32


def stacked_states(state: State, bases: Sequence[State | None]) -> State:
    """Return each device's starting model stacked along a new first dimension.

    ``bases[i]`` None: device ``i`` starts from ``state``. Stacked values are the same
    whether copied from one base or gathered from several, so a device's result does not
    depend on the bases of the devices trained with it.
    """
    n = len(bases)
    if all(b is None for b in bases):
        return {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in state.items()}
    return {k: torch.stack([(state if b is None else b)[k].detach() for b in bases]) for k in state}


def lock_step_chunks(
    jobs: Sequence[DeviceJob],
    per_job: Sequence[Sequence[np.ndarray]],
    group_size: int,
    min_size: int = 2,
) -> Iterator[tuple[tuple[int, ...], list[int], list[int]]]:
    """Yield ``(signature, chunk, padded)``: the job indices trained together, in order.

    Jobs are grouped by their step signature (the sequence of per-step batch sizes of
    ``per_job``); each group is cut, in device-id order, into chunks of at most
    ``group_size``. ``padded`` is the chunk, repeated up to ``min_size`` jobs when it is
    smaller (a lone job twice by default): with a batch of one matrix, MKL splits a GEMM
    across threads differently than with two or more, and oneDNN picks convolution kernels
    by the number of channels (:func:`~fedsim.runtime.grouped.min_chunk`), which would
    make the device's bits depend on how many devices share its signature.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, batches in enumerate(per_job):
        groups.setdefault(tuple(len(b) for b in batches), []).append(j)
    for signature, members in groups.items():
        members = sorted(members, key=lambda j: (jobs[j].device_id, j))
        for start in range(0, len(members), group_size):
            chunk = members[start : start + group_size]
            yield signature, chunk, (chunk * min_size)[: max(len(chunk), min_size)]


def step_rows(per_job: Sequence[Sequence[np.ndarray]], padded: Sequence[int]) -> list[Tensor]:
    """Return, per step, the ``(devices, batch)`` rows of the chunk's jobs."""
    steps = len(per_job[padded[0]])
    return [torch.from_numpy(np.stack([per_job[j][s] for j in padded])) for s in range(steps)]


def can_fuse(model: nn.Module) -> bool:
    """Return whether ``model`` has the hand-fused lock-step path (an MLP chain)."""
    return _fused_plan(model) is not None


def resolve_vectorize(vectorize: bool | Literal["auto"], model: nn.Module) -> bool:
    """Return whether to train in lock-step: ``"auto"`` means when :func:`can_fuse`.

    Conv models stay on the loop in ``"auto"``: their lock-step (grouped convolutions) was
    measured no faster than the loop on MNIST- and CIFAR-shaped images
    (``benchmarks/bench_conv.py``, docs/performance.md); ``True`` still trains them so.
    """
    return can_fuse(model) if vectorize == "auto" else bool(vectorize)


def train_vectorized(
    model: nn.Module,
    global_state: State,
    x: Tensor,
    y: Tensor,
    jobs: Sequence[DeviceJob],
    opt: LocalSGD,
    *,
    backend: Literal["auto", "fused", "grouped", "vmap"] = "auto",
    group_size: int = DEFAULT_GROUP_SIZE,
) -> list[DeviceResult]:
    """Train the devices in lock-step, as batched computations over stacked states.

    Same semantics as :func:`train_loop` (same batches, same SGD, same BatchNorm running-stat
    updates), equal to it up to floating-point rounding. Devices are grouped by their step
    signature (the sequence of per-step batch sizes); each signature group is cut, in
    device-id order, into chunks of at most ``group_size`` devices, and a chunk runs all its
    steps as one batched computation. Chunks are never masked, so no work is wasted on
    devices of unequal sizes, and a device's chunk does not depend on the call's order.
    A lone device is stacked with a copy of itself (a conv model's small chunks are padded
    with copies to :func:`~fedsim.runtime.grouped.min_chunk` devices), so that (measured
    with MKL and oneDNN on 1 and 2 threads) a device's result is bit-identical whether it
    is trained alone or among 50 — it does not depend on how devices are grouped onto hosts;
    a model with convolutions trains on one torch thread for this
    (:func:`~fedsim.runtime.grouped.conv_threads`). It is not bit-identical to
    :func:`train_loop`: differences are rounding-level (about 1e-7 absolute after an epoch of
    2NN), larger when a ReLU pre-activation or a near-constant BatchNorm channel sits at the
    edge of rounding, since the trajectories can then fork.

    Parameters
    ----------
    model : torch.nn.Module
        A model of the right architecture (not modified).
    global_state : dict of str to torch.Tensor
        The starting ``state_dict`` of every device (not modified).
    x, y : torch.Tensor
        The host's samples (float) and labels (int64); jobs index rows of them.
    jobs : sequence of DeviceJob
        The devices to train.
    opt : LocalSGD
        Optimiser settings.
    backend : {"auto", "fused", "grouped", "vmap"}
        ``"fused"``: hand-written batched forward/backward (``bmm``/``baddbmm``) for chains of
        Linear, ReLU, BatchNorm1d and Flatten (the common MLP); ``"grouped"``: grouped
        convolutions and autograd for conv chains (:func:`~fedsim.runtime.grouped.
        grouped_chain`: Conv1d/2d, MaxPool1d/2d, BatchNorm1d/2d, ReLU, Flatten, Unflatten,
        Linear); ``"vmap"``: ``torch.func.vmap(grad(...))`` over stacked parameters, for any
        layers without randomness; ``"auto"``: the first of these three the model is for
        (checked by ``torch.fx`` tracing).
    group_size : int
        Maximum number of devices per batched computation.

    Returns
    -------
    list of DeviceResult
        One result per job, in the order of ``jobs``.
    """
    bn = check_batchnorm(model, opt.batch_size)
    plan = _fused_plan(model) if backend in ("auto", "fused") else None
    if backend == "fused" and plan is None:
        raise ValueError("the model is not a chain of Linear/ReLU/BatchNorm1d/Flatten")
    chain = None
    if backend == "grouped" or (backend == "auto" and plan is None):
        chain = grouped_chain(model)
        if backend == "grouped" and chain is None:
            raise ValueError("the model is not a conv chain (see fedsim.runtime.grouped)")
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    state = {k: v.detach() for k, v in global_state.items()}
    state = opt.fresh_state(state, trained) | state  # fresh values where it has none

    per_job = [device_batches(job, opt.batch_size, opt.local_epochs, bn) for job in jobs]
    results: list[DeviceResult | None] = [None] * len(jobs)
    chunks = lock_step_chunks(jobs, per_job, group_size, min_chunk(model))
    with conv_threads(model):
        for signature, chunk, padded in chunks:
            n = len(padded)
            stacked = stacked_states(state, [jobs[j].base for j in padded])
            if signature:
                rows = step_rows(per_job, padded)
                # gathered step by step, so each step's batch is cache-hot when used
                steps = ((x[r], y[r]) for r in rows)
                if plan is not None:
                    losses = _fused_train(plan, stacked, steps, opt)
                elif chain is not None:
                    losses = _grouped_train(chain, trained, stacked, steps, opt)
                else:
                    losses = _vmap_train(model, stacked, steps, opt)
                mean_losses = losses.double().mean(0).tolist()
            else:
                mean_losses = [math.nan] * n
            for i, j in enumerate(chunk):
                results[j] = DeviceResult(
                    device_id=jobs[j].device_id,
                    state={k: v[i] for k, v in stacked.items()},
                    num_samples=len(jobs[j].train_idx),
                    num_steps=len(signature),
                    mean_loss=mean_losses[i],
                )
    return [r for r in results if r is not None]
