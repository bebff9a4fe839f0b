"""Local SGD of many simulated devices: a bit-exact per-device loop and a lock-step batched path."""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

State = dict[str, Tensor]

#: Devices trained together in one batched computation, at most (chunks are cut in device-id
#: order inside each group of identical step signature).
DEFAULT_GROUP_SIZE = 32


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


def has_batchnorm(model: nn.Module) -> bool:
    """Return whether ``model`` contains a BatchNorm layer."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def _check(model: nn.Module, opt: LocalSGD) -> bool:
    bn = has_batchnorm(model)
    if bn and opt.batch_size == 1:
        raise ValueError("batch_size 1 is not supported for models with BatchNorm")
    return bn


def _device_batches(job: DeviceJob, opt: LocalSGD, bn: bool) -> list[np.ndarray]:
    idx = np.asarray(job.train_idx, dtype=np.int64)
    order = batch_order(len(idx), opt.batch_size, opt.local_epochs, job.seed, drop_singleton=bn)
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
    plain SGD (``p -= lr * grad``) on cross-entropy averaged over each batch of
    :func:`batch_order`. A device's result depends only on ``global_state``, its data and its
    seed, never on the other jobs of the call, and is bit-identical across calls.

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
    bn = _check(model, opt)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for job in jobs:
        model.load_state_dict(global_state if job.base is None else job.base)
        batches = _device_batches(job, opt, bn)
        losses = []
        for b in batches:
            bt = torch.from_numpy(b)
            for p in params:
                p.grad = None
            loss = F.cross_entropy(model(x[bt]), y[bt])
            loss.backward()
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p.sub_(opt.lr * p.grad)
            losses.append(loss.detach())
        mean_loss = float(torch.stack(losses).double().mean()) if losses else math.nan
        results.append(
            DeviceResult(
                device_id=job.device_id,
                state=_owned(model.state_dict()),
                num_samples=len(job.train_idx),
                num_steps=len(batches),
                mean_loss=mean_loss,
            )
        )
    return results


# ----------------------------------------------------------------------------------------
# Vectorised: devices in lock-step
# ----------------------------------------------------------------------------------------


def _bn_momentum(bn: _BatchNorm, tracked: Tensor) -> Tensor | float:
    """Return the running-stat factor of ``bn`` (cumulative average when momentum is None)."""
    if bn.momentum is None:
        return 1.0 / tracked.to(torch.float64)
    return float(bn.momentum)


def _update_running(
    mean_buf: Tensor,
    var_buf: Tensor,
    tracked: Tensor,
    momentum: Tensor | float,
    mean: Tensor,
    var_unbiased: Tensor,
) -> None:
    """Update stacked running stats in place (``tracked`` already incremented)."""
    if isinstance(momentum, Tensor):
        m = momentum.to(mean_buf.dtype).view(-1, *([1] * (mean_buf.dim() - 1)))
        mean_buf.copy_(m * mean + (1 - m) * mean_buf)
        var_buf.copy_(m * var_unbiased + (1 - m) * var_buf)
    else:
        mean_buf.mul_(1 - momentum).add_(mean, alpha=momentum)
        var_buf.mul_(1 - momentum).add_(var_unbiased, alpha=momentum)


@dataclass(frozen=True)
class _Op:
    kind: Literal["linear", "relu", "bn", "flatten"]
    prefix: str = ""
    has_bias: bool = False
    eps: float = 0.0
    module: nn.Module | None = None


#: Fused plans by model object. Tracing costs ~2 ms and a host trains its one scratch model
#: in many calls (a block at a time inline); a memo of a pure function of the model's
#: structure, which fedsim never changes after building a model.
_PLANS: weakref.WeakKeyDictionary[nn.Module, list[_Op] | None] = weakref.WeakKeyDictionary()


def _fused_plan(model: nn.Module) -> list[_Op] | None:
    """Return the op chain of an MLP of Linear/ReLU/BatchNorm1d/Flatten, or None (memoised)."""
    if model not in _PLANS:
        _PLANS[model] = _trace_plan(model)
    return _PLANS[model]


def _trace_plan(model: nn.Module) -> list[_Op] | None:
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "not a plain chain"
        return None
    modules = dict(model.named_modules())
    ops: list[_Op] = []
    prev: Any = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                return None
            prev = node
            continue
        if node.op == "output":
            return ops if node.args[0] is prev and ops and ops[-1].kind == "linear" else None
        if len(node.args) < 1 or node.args[0] is not prev or len(node.users) != 1:
            return None
        extra = tuple(node.args[1:])
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.Linear) and not extra:
                ops.append(_Op("linear", node.target, mod.bias is not None))
            elif isinstance(mod, nn.ReLU) and not extra:
                ops.append(_Op("relu"))
            elif isinstance(mod, nn.Identity) and not extra:
                pass
            elif isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1:
                ops.append(_Op("flatten"))
            elif (
                isinstance(mod, nn.BatchNorm1d)
                and mod.affine
                and mod.track_running_stats
                and not extra
            ):
                ops.append(_Op("bn", node.target, eps=mod.eps, module=mod))
            else:
                return None
        elif node.op == "call_function" and node.target in (F.relu, torch.relu):
            if extra or node.kwargs.get("inplace", False):
                return None
            ops.append(_Op("relu"))
        elif node.op == "call_function" and node.target is torch.flatten:
            if extra not in ((1,), ()) or node.kwargs or not extra:
                return None
            ops.append(_Op("flatten"))
        elif node.op == "call_method" and node.target == "relu" and not extra:
            ops.append(_Op("relu"))
        else:
            return None
        prev = node
    return None


def _fused_train(
    plan: list[_Op],
    stacked: State,
    batches: Iterable[tuple[Tensor, Tensor]],
    lr: float,
) -> Tensor:
    """Run the hand-fused MLP steps on stacked state (in place); return losses (steps, D)."""
    losses = []
    for xb, yb in batches:
        bsz = xb.shape[1]
        h = xb.flatten(2) if xb.dim() > 3 else xb
        saved: list[Any] = []
        for op in plan:
            if op.kind == "linear":
                w = stacked[op.prefix + ".weight"]
                saved.append(h)
                if op.has_bias:
                    h = torch.baddbmm(stacked[op.prefix + ".bias"].unsqueeze(1), h, w.mT)
                else:
                    h = torch.bmm(h, w.mT)
            elif op.kind == "relu":
                h = torch.relu(h)
                saved.append(h)
            elif op.kind == "flatten":
                saved.append(None)
            else:
                mean = h.mean(1, keepdim=True)
                xc = h - mean
                var = (xc * xc).mean(1, keepdim=True)
                rstd = torch.rsqrt(var + op.eps)
                xhat = xc * rstd
                saved.append((xhat, rstd))
                gamma = stacked[op.prefix + ".weight"].unsqueeze(1)
                h = torch.addcmul(stacked[op.prefix + ".bias"].unsqueeze(1), xhat, gamma)
                bn = op.module
                assert isinstance(bn, _BatchNorm)
                tracked = stacked[op.prefix + ".num_batches_tracked"]
                tracked.add_(1)
                _update_running(
                    stacked[op.prefix + ".running_mean"],
                    stacked[op.prefix + ".running_var"],
                    tracked,
                    _bn_momentum(bn, tracked),
                    mean.squeeze(1),
                    var.squeeze(1) * (bsz / (bsz - 1)),
                )
        # Cross-entropy (mean over the batch) and its gradient w.r.t. the logits.
        lse = torch.logsumexp(h, 2, keepdim=True)
        logp = h - lse
        loss = -logp.gather(2, yb.unsqueeze(2)).squeeze(2).mean(1)
        losses.append(loss)
        g = logp.exp_()
        g.scatter_add_(2, yb.unsqueeze(2), torch.full_like(g[..., :1], -1.0))
        g.div_(bsz)
        for i in range(len(plan) - 1, -1, -1):
            op, s = plan[i], saved[i]
            if op.kind == "linear":
                w = stacked[op.prefix + ".weight"]
                g_in = torch.bmm(g, w) if i > 0 else None
                w.baddbmm_(g.mT, s, alpha=-lr)
                if op.has_bias:
                    stacked[op.prefix + ".bias"].sub_(lr * g.sum(1))
                if g_in is None:
                    break  # the first layer: no gradient to pass further down
                g = g_in
            elif op.kind == "relu":
                g = torch.ops.aten.threshold_backward(g, s, 0)
            elif op.kind == "flatten":
                pass
            else:
                xhat, rstd = s
                gamma = stacked[op.prefix + ".weight"]
                dgamma = (g * xhat).sum(1)
                dbeta = g.sum(1)
                gx = g * gamma.unsqueeze(1)
                g = rstd * (
                    gx - gx.mean(1, keepdim=True) - xhat * (gx * xhat).mean(1, keepdim=True)
                )
                gamma.sub_(lr * dgamma)
                stacked[op.prefix + ".bias"].sub_(lr * dbeta)
            if g is None:
                break
    return torch.stack(losses) if losses else torch.zeros(0, 0)


class _StatBN(nn.Module):
    """BatchNorm in train mode without running stats; records its batch stats per call."""

    def __init__(self, bn: _BatchNorm, sink: list[tuple[Tensor, Tensor]]) -> None:
        super().__init__()
        self.weight = bn.weight
        self.bias = bn.bias
        self.eps = bn.eps
        self.sink = sink

    def forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        with torch.no_grad():
            xd = x.detach()
            n = xd.numel() // xd.shape[1]
            self.sink.append((xd.mean(dims), xd.var(dims, correction=0) * (n / (n - 1))))
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def _vmap_trainer(
    model: nn.Module,
) -> tuple[Callable[..., Any], list[str], list[tuple[str, _BatchNorm]]]:
    """Return a batched step ``(params, buffers, xb, yb) -> (grads, (loss, stats))``."""
    work = copy.deepcopy(model)
    sink: list[tuple[Tensor, Tensor]] = []
    bns: list[tuple[str, _BatchNorm]] = []
    for name, mod in list(work.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, _BatchNorm):
                if not (child.affine and child.track_running_stats):
                    raise NotImplementedError("BatchNorm without affine/running stats")
                full = f"{name}.{cname}" if name else cname
                bns.append((full, child))
                setattr(mod, cname, _StatBN(child, sink))
            elif isinstance(child, nn.Dropout | nn.Dropout1d | nn.Dropout2d) and child.p > 0:
                raise NotImplementedError("dropout is not supported by train_vectorized")
    work.train()
    param_names = [n for n, _ in work.named_parameters()]

    def loss_fn(
        params: State,
        buffers: State,
        xb: Tensor,
        yb: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, list[tuple[Tensor, Tensor]]]]:
        sink.clear()
        out = functional_call(work, (params, buffers), (xb,))
        loss = F.cross_entropy(out, yb)
        stats = list(sink)
        sink.clear()
        return loss, (loss.detach(), stats)

    step = vmap(grad(loss_fn, has_aux=True), in_dims=(0, 0, 0, 0), randomness="error")
    return step, param_names, bns


def _vmap_train(
    model: nn.Module,
    stacked: State,
    batches: Iterable[tuple[Tensor, Tensor]],
    lr: float,
) -> Tensor:
    """Run vmap(grad) steps on stacked state (in place); return losses (steps, D)."""
    step, param_names, bns = _vmap_trainer(model)
    bn_names = {
        f"{p}.{b}" for p, _ in bns for b in ("running_mean", "running_var", "num_batches_tracked")
    }
    params = {n: stacked[n] for n in param_names}
    buffers = {n: t for n, t in stacked.items() if n not in params and n not in bn_names}
    losses = []
    for xb, yb in batches:
        grads, (loss, stats) = step(params, buffers, xb, yb)
        for (prefix, bn), (mean, var_unbiased) in zip(bns, stats, strict=True):
            tracked = stacked[prefix + ".num_batches_tracked"]
            tracked.add_(1)
            _update_running(
                stacked[prefix + ".running_mean"],
                stacked[prefix + ".running_var"],
                tracked,
                _bn_momentum(bn, tracked),
                mean,
                var_unbiased,
            )
        for n in param_names:
            params[n].sub_(lr * grads[n])
        losses.append(loss)
    return torch.stack(losses) if losses else torch.zeros(0, 0)


def _stacked(state: State, bases: Sequence[State | None]) -> State:
    """Return each device's starting model stacked along a new first dimension.

    ``bases[i]`` None: device ``i`` starts from ``state``. Stacked values are the same
    whether copied from one base or gathered from several, so a device's result does not
    depend on the bases of the devices trained with it.
    """
    n = len(bases)
    if all(b is None for b in bases):
        return {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in state.items()}
    return {k: torch.stack([(state if b is None else b)[k].detach() for b in bases]) for k in state}


def can_fuse(model: nn.Module) -> bool:
    """Return whether ``model`` has the hand-fused lock-step path (an MLP chain)."""
    return _fused_plan(model) is not None


def resolve_vectorize(vectorize: bool | Literal["auto"], model: nn.Module) -> bool:
    """Return whether to train in lock-step: ``"auto"`` means when :func:`can_fuse`."""
    return can_fuse(model) if vectorize == "auto" else bool(vectorize)


def train_vectorized(
    model: nn.Module,
    global_state: State,
    x: Tensor,
    y: Tensor,
    jobs: Sequence[DeviceJob],
    opt: LocalSGD,
    *,
    backend: Literal["auto", "fused", "vmap"] = "auto",
    group_size: int = DEFAULT_GROUP_SIZE,
) -> list[DeviceResult]:
    """Train the devices in lock-step, as batched computations over stacked states.

    Same semantics as :func:`train_loop` (same batches, same SGD, same BatchNorm running-stat
    updates), equal to it up to floating-point rounding. Devices are grouped by their step
    signature (the sequence of per-step batch sizes); each signature group is cut, in
    device-id order, into chunks of at most ``group_size`` devices, and a chunk runs all its
    steps as one batched computation. Chunks are never masked or padded, so no work is wasted
    on devices of unequal sizes, and a device's chunk does not depend on the call's order.
    A lone device is stacked with a copy of itself, so that (measured with MKL on 1 and 2
    threads) a device's result is bit-identical whether it is trained alone or among 50 —
    it does not depend on how devices are grouped onto hosts. It is not bit-identical to
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
    backend : {"auto", "fused", "vmap"}
        ``"fused"``: hand-written batched forward/backward (``bmm``/``baddbmm``) for chains of
        Linear, ReLU, BatchNorm1d and Flatten (the common MLP); ``"vmap"``:
        ``torch.func.vmap(grad(...))`` over stacked parameters, for any layers without
        randomness (Conv2d, MaxPool2d, BatchNorm2d, ...); ``"auto"``: fused when the model
        is such a chain (checked by ``torch.fx`` tracing), vmap otherwise.
    group_size : int
        Maximum number of devices per batched computation.

    Returns
    -------
    list of DeviceResult
        One result per job, in the order of ``jobs``.
    """
    bn = _check(model, opt)
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    plan = _fused_plan(model) if backend in ("auto", "fused") else None
    if backend == "fused" and plan is None:
        raise ValueError("the model is not a chain of Linear/ReLU/BatchNorm1d/Flatten")
    state = {k: v.detach() for k, v in global_state.items()}

    per_job = [_device_batches(job, opt, bn) for job in jobs]
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, batches in enumerate(per_job):
        groups.setdefault(tuple(len(b) for b in batches), []).append(j)

    results: list[DeviceResult | None] = [None] * len(jobs)
    for signature, members in groups.items():
        members = sorted(members, key=lambda j: (jobs[j].device_id, j))
        for start in range(0, len(members), group_size):
            chunk = members[start : start + group_size]
            # A lone device is computed twice over: with a batch of one matrix, MKL splits a
            # GEMM across threads differently than with two or more, which would make the
            # device's bits depend on how many devices share its signature.
            padded = chunk if len(chunk) > 1 else chunk * 2
            n = len(padded)
            stacked = _stacked(state, [jobs[j].base for j in padded])
            if signature:
                rows = [
                    torch.from_numpy(np.stack([per_job[j][s] for j in padded]))
                    for s in range(len(signature))
                ]
                # gathered step by step, so each step's batch is cache-hot when used
                steps = ((x[r], y[r]) for r in rows)
                if plan is not None:
                    losses = _fused_train(plan, stacked, steps, opt.lr)
                else:
                    losses = _vmap_train(model, stacked, steps, opt.lr)
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
