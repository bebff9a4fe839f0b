"""Lock-step training of any model without randomness: ``torch.func.vmap(grad(...))``.

The devices' parameters are stacked along a new first dimension and one vmapped gradient per
step serves them all (Conv2d, MaxPool2d, BatchNorm2d, ...: whatever ``functional_call``
runs). BatchNorm layers are swapped for :class:`~fedsim.runtime.batchnorm._StatBN`, which
reports its batch statistics, so the running statistics are updated outside the vmapped
function exactly as the per-device loop updates them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from fedsim.runtime.batchnorm import _bn_momentum, _StatBN, _update_running
from fedsim.runtime.optim import OPT_PREFIX, LocalSGD

State = dict[str, Tensor]


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
    opt: LocalSGD,
) -> Tensor:
    """Run vmap(grad) steps on stacked state (in place); return losses (steps, D)."""
    step, param_names, bns = _vmap_trainer(model)
    bn_names = {
        f"{p}.{b}" for p, _ in bns for b in ("running_mean", "running_var", "num_batches_tracked")
    }
    params = {n: stacked[n] for n in param_names}
    buffers = {
        n: t
        for n, t in stacked.items()
        if n not in params and n not in bn_names and not n.startswith(OPT_PREFIX)
    }
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
        opt.step(params, grads, stacked)
        losses.append(loss)
    return torch.stack(losses) if losses else torch.zeros(0, 0)
