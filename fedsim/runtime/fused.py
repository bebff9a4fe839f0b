"""Hand-fused lock-step training of MLP chains (Linear, ReLU, BatchNorm1d, Flatten)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedsim.runtime.batchnorm import _bn_momentum, _update_running
from fedsim.runtime.optim import LocalSGD

State = dict[str, Tensor]


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
    opt: LocalSGD,
) -> Tensor:
    """Run the hand-fused MLP steps on stacked state (in place); return losses (steps, D).

    Plain SGD updates each weight in place as soon as its gradient is known (``baddbmm_``,
    no gradient tensor); any other optimiser gets every gradient of the step, written into
    buffers allocated once, then steps.
    """
    lr = opt.lr
    in_place = type(opt) is LocalSGD
    grads: State = {}
    opt_step = None
    if not in_place:
        for op in plan:
            if op.kind in ("linear", "bn"):
                keys = [".weight", ".bias"] if op.kind == "bn" or op.has_bias else [".weight"]
                for key in (op.prefix + k for k in keys):
                    grads[key] = torch.empty_like(stacked[key])
        opt_step = opt.stepper({k: stacked[k] for k in grads}, grads, stacked)
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
                if in_place:
                    w.baddbmm_(g.mT, s, alpha=-lr)
                    if op.has_bias:
                        stacked[op.prefix + ".bias"].sub_(lr * g.sum(1))
                else:
                    torch.bmm(g.mT, s, out=grads[op.prefix + ".weight"])
                    if op.has_bias:
                        torch.sum(g, 1, out=grads[op.prefix + ".bias"])
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
                if in_place:
                    gamma.sub_(lr * dgamma)
                    stacked[op.prefix + ".bias"].sub_(lr * dbeta)
                else:
                    grads[op.prefix + ".weight"].copy_(dgamma)
                    grads[op.prefix + ".bias"].copy_(dbeta)
            if g is None:
                break
        if opt_step is not None:
            opt_step()
    return torch.stack(losses) if losses else torch.zeros(0, 0)
