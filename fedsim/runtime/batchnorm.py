"""BatchNorm in lock-step training: running statistics of stacked devices, batch statistics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    """Return whether ``model`` contains a BatchNorm layer."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


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
