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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from fedsim.runtime.batchnorm import _bn_momentum, _StatBN, _update_running
from fedsim.runtime.optim import OPT_PREFIX, LocalSGD

State = dict[str, Tensor]


@dataclass
class StatLoss:
    """A model's cross-entropy as a function of its values, for ``torch.func`` transforms.

    ``loss(params, buffers, xb, yb)`` returns ``(loss, (loss.detach(), stats))`` with the
    batch statistics of every BatchNorm layer (``bns``: their names and modules, in forward
    order), which :meth:`record` writes into stacked running statistics afterwards.
    """

    loss: Callable[..., tuple[Tensor, tuple[Tensor, list[tuple[Tensor, Tensor]]]]]
    param_names: list[str]
    bns: list[tuple[str, _BatchNorm]]

    def buffers(self, stacked: State) -> State:
        """Return the stacked buffers the forward pass reads (not running stats, optimiser)."""
        stats = {f"{p}.{b}" for p, _ in self.bns for b in _BN_STATS}
        return {
            n: t
            for n, t in stacked.items()
            if n not in self.param_names and n not in stats and not n.startswith(OPT_PREFIX)
        }

    def record(self, stacked: State, stats: list[tuple[Tensor, Tensor]]) -> None:
        """Update the stacked running statistics with one forward pass's batch statistics."""
        for (prefix, bn), (mean, var_unbiased) in zip(self.bns, stats, strict=True):
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


_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def stat_loss(model: nn.Module, what: str = "lock-step training") -> StatLoss:
    """Return :class:`StatLoss` of a copy of ``model`` whose BatchNorms report batch stats.

    Raises
    ------
    NotImplementedError
        A BatchNorm without affine weights or running statistics, or dropout (randomness
        would differ between devices trained together).
    """
    work = copy.deepcopy(model)
    sink: list[tuple[Tensor, Tensor]] = []
    bns: list[tuple[str, _BatchNorm]] = []
    for name, mod in list(work.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, _BatchNorm):
                if not (child.affine and child.track_running_stats):
                    raise NotImplementedError("BatchNorm without affine/running stats")
                bns.append((f"{name}.{cname}" if name else cname, child))
                setattr(mod, cname, _StatBN(child, sink))
            elif isinstance(child, nn.Dropout | nn.Dropout1d | nn.Dropout2d) and child.p > 0:
                raise NotImplementedError(f"dropout is not supported by {what}")
    work.train()

    def loss_fn(
        params: State, buffers: State, xb: Tensor, yb: Tensor
    ) -> tuple[Tensor, tuple[Tensor, list[tuple[Tensor, Tensor]]]]:
        sink.clear()
        loss = F.cross_entropy(functional_call(work, (params, buffers), (xb,)), yb)
        stats = list(sink)
        sink.clear()
        return loss, (loss.detach(), stats)

    return StatLoss(loss_fn, [n for n, _ in work.named_parameters()], bns)


def _vmap_train(
    model: nn.Module,
    stacked: State,
    batches: Iterable[tuple[Tensor, Tensor]],
    opt: LocalSGD,
) -> Tensor:
    """Run vmap(grad) steps on stacked state (in place); return losses (steps, D)."""
    f = stat_loss(model, "train_vectorized")
    step = vmap(grad(f.loss, has_aux=True), in_dims=(0, 0, 0, 0), randomness="error")
    params = {n: stacked[n] for n in f.param_names}
    buffers = f.buffers(stacked)
    losses = []
    for xb, yb in batches:
        grads, (loss, stats) = step(params, buffers, xb, yb)
        f.record(stacked, stats)
        opt.step(params, grads, stacked)
        losses.append(loss)
    return torch.stack(losses) if losses else torch.zeros(0, 0)
