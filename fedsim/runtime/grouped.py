"""Lock-step training of conv chains by grouped convolutions: one batched computation a step.

The activations of ``G`` stacked devices are kept as one tensor ``(B, G*C, *spatial)``: a
convolution of the ``G`` devices is then a single ``groups=G`` convolution (weights
``(G*out, in, *kernel)``, each device's block applied to its own channels), and max-pooling,
ReLU and BatchNorm act on that tensor exactly as on one device's ``(B, C, *spatial)`` --
BatchNorm's batch statistics are per channel, so per device, and its running statistics are
updated in place in the stacked buffers, as the module updates its own. Flatten turns the
tensor into ``(G, B, features)``, where Linear layers are batched matrix products. Backward is
autograd's; the optimiser of :mod:`fedsim.runtime.optim` steps the stacked values.

Unlike ``torch.func.vmap`` (:mod:`fedsim.runtime.vmapped`), which folds the devices into the
batch dimension for pooling and into the channels for convolutions and copies activations
between the two at every layer, this layout needs no such copies.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim.runtime.optim import LocalSGD

State = dict[str, Tensor]

#: Input channels (of all stacked devices together) below which oneDNN runs a grouped
#: convolution by another kernel (measured: torch 2.13, oneDNN 3.12, AVX-512, 1 and 2
#: threads: a direct ``jit:avx2`` kernel below 8, im2col and GEMM from 8 up), which rounds
#: differently; see :func:`min_chunk`.
ONEDNN_GEMM_CHANNELS = 8

_CONV = (nn.Conv1d, nn.Conv2d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)

#: Chains by model object (a memo of a pure function of the model's structure, as in fused).
_CHAINS: weakref.WeakKeyDictionary[nn.Module, list[tuple[str, nn.Module]] | None] = (
    weakref.WeakKeyDictionary()
)


def min_chunk(model: nn.Module) -> int:
    """Return the fewest devices a lock-step chunk of ``model`` must hold (copies pad it).

    2 for a model without convolutions: with a batch of one matrix, MKL splits a GEMM across
    threads differently than with two or more. With convolutions, also enough devices that
    every convolution of the chunk has at least :data:`ONEDNN_GEMM_CHANNELS` input channels
    in all, so that oneDNN computes it by the same kernel whatever the chunk's size: 8 for
    ``perfit_cnn`` on one-channel inputs, 3 for ``mtfl_cnn`` (3 channels), 2 for 9 channels.
    Then a device's bits do not depend on how many devices share its chunk (tested).
    """
    channels = _conv_channels(model)
    return max(2, -(-ONEDNN_GEMM_CHANNELS // min(channels))) if channels else 2


@contextmanager
def conv_threads(model: nn.Module) -> Iterator[None]:
    """Run the block on one torch thread if ``model`` has convolutions; restore afterwards.

    On two threads oneDNN divides a grouped convolution's work between the threads by the
    problem's size, and a device's bits came to depend on how many devices share its chunk
    (measured: ``perfit_cnn`` in chunks of 3, 5, 7 or 9 devices against 32); on one thread,
    from :func:`min_chunk` devices up, they do not.
    """
    threads = torch.get_num_threads()
    if threads == 1 or not _conv_channels(model):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _conv_channels(model: nn.Module) -> list[int]:
    return [m.in_channels for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]


def grouped_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Return ``model``'s layers when it is a conv chain this module trains, else None.

    A chain is a model whose forward pass (traced by ``torch.fx``) calls its submodules one
    after another, each on the previous one's output, at least one a convolution, the last
    a Linear (the logits), all of:
    Conv1d/Conv2d (zero padding, no groups), MaxPool1d/MaxPool2d, BatchNorm1d/BatchNorm2d
    (affine, with running statistics and a numeric momentum), ReLU, Flatten (from dim 1),
    Unflatten (of dim 1), Linear and Identity. Anything else -- dropout, other layers,
    functions between layers -- gives None. Memoised per model object.
    """
    if model not in _CHAINS:
        _CHAINS[model] = _trace_chain(model)
    return _CHAINS[model]


def _supported(mod: nn.Module) -> bool:
    if isinstance(mod, _CONV):
        return mod.groups == 1 and mod.padding_mode == "zeros"
    if isinstance(mod, _POOL):
        return not mod.return_indices
    if isinstance(mod, _BN):
        return mod.affine and mod.track_running_stats and mod.momentum is not None
    if isinstance(mod, nn.Flatten):
        return mod.start_dim == 1 and mod.end_dim == -1
    if isinstance(mod, nn.Unflatten):
        return mod.dim == 1
    return isinstance(mod, nn.ReLU | nn.Linear | nn.Identity)


def _trace_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "not a plain chain"
        return None
    modules = dict(model.named_modules())
    chain: list[tuple[str, nn.Module]] = []
    prev: Any = None
    for node in gm.graph.nodes:
        if node.op == "placeholder" and prev is None:
            prev = node
        elif node.op == "output":
            ends_linear = bool(chain) and isinstance(chain[-1][1], nn.Linear)
            has_conv_layer = any(isinstance(m, _CONV) for _, m in chain)
            return chain if node.args[0] is prev and ends_linear and has_conv_layer else None
        elif (
            node.op == "call_module"
            and node.args == (prev,)
            and not node.kwargs
            and len(node.users) == 1
            and _supported(modules[node.target])
        ):
            chain.append((node.target, modules[node.target]))
            prev = node
        else:
            return None
    return None


def _to_grouped(h: Tensor) -> Tensor:
    """``(G, B, C, *spatial)`` -> ``(B, G*C, *spatial)``."""
    return h.transpose(0, 1).flatten(1, 2)


def _forward(chain: list[tuple[str, nn.Module]], p: State, xb: Tensor) -> Tensor:
    """Return the logits ``(G, B, classes)`` of the stacked devices on ``xb`` ``(G, B, ...)``.

    ``h`` is either stacked, ``(G, B, ...)``, or grouped, ``(B, G*C, *spatial)``
    (``grouped`` says which); each layer converts it to the layout it needs.
    """
    g = xb.shape[0]
    h, grouped = xb, False
    for name, m in chain:
        key = name + "."
        if isinstance(m, (*_CONV, *_POOL)) or (isinstance(m, _BN) and (grouped or h.dim() > 3)):
            if not grouped:
                h, grouped = _to_grouped(h), True
            if isinstance(m, _CONV):
                conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
                b = p[key + "bias"].flatten() if m.bias is not None else None
                w = p[key + "weight"].flatten(0, 1)
                h = conv(h, w, b, m.stride, m.padding, m.dilation, g)
            elif isinstance(m, _POOL):
                pool = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
                h = pool(h, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            else:
                h = _batch_norm(m, key, p, h)
        elif isinstance(m, _BN):  # BatchNorm1d of features: (G, B, F) -> (B, G*F) and back
            h = _batch_norm(m, key, p, h.transpose(0, 1).flatten(1))
            h = h.unflatten(1, (g, -1)).transpose(0, 1)
        elif isinstance(m, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(m, nn.Flatten):
            h = h.unflatten(1, (g, -1)).flatten(2).transpose(0, 1) if grouped else h.flatten(2)
            grouped = False
        elif isinstance(m, nn.Unflatten):
            if grouped:
                h, grouped = h.unflatten(1, (g, -1)).transpose(0, 1), False
            h = h.unflatten(2, m.unflattened_size)
        elif isinstance(m, nn.Linear):
            if grouped:
                h, grouped = h.unflatten(1, (g, -1)).transpose(0, 1), False
            flat = h.flatten(1, -2)  # (G, rows, in); W @ x^T keeps W's gradient contiguous
            out = torch.bmm(p[key + "weight"], flat.mT).mT
            if m.bias is not None:
                out = out + p[key + "bias"].unsqueeze(1)
            h = out.unflatten(1, h.shape[1:-1])
    if grouped or h.dim() != 3:
        raise NotImplementedError(f"grouped lock-step: logits of shape {tuple(h.shape)}")
    return h


def _batch_norm(m: nn.Module, key: str, p: State, h: Tensor) -> Tensor:
    """Train-mode BatchNorm of grouped ``h``; updates the stacked running statistics."""
    assert isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None
    p[key + "num_batches_tracked"].add_(1)
    return F.batch_norm(
        h, p[key + "running_mean"].view(-1), p[key + "running_var"].view(-1),
        p[key + "weight"].flatten(), p[key + "bias"].flatten(), True, m.momentum, m.eps,
    )  # fmt: skip


def _grouped_train(
    chain: list[tuple[str, nn.Module]],
    param_names: list[str],
    stacked: State,
    batches: Iterable[tuple[Tensor, Tensor]],
    opt: LocalSGD,
) -> Tensor:
    """Run grouped-convolution steps on stacked state (in place); return losses (steps, G).

    Each step: the forward pass of :func:`_forward` on leaves that alias the stacked
    parameters, the sum over devices of each device's batch-mean cross-entropy, autograd's
    gradients (each device's own: the devices do not interact), then ``opt.step``.
    """
    params = {n: stacked[n] for n in param_names}
    leaves = {n: t.detach().requires_grad_() for n, t in params.items()}
    values = stacked | leaves
    losses = []
    for xb, yb in batches:
        logits = _forward(chain, values, xb)
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
        per_device = loss.view(yb.shape).mean(1)
        grads = torch.autograd.grad(per_device.sum(), list(leaves.values()))
        with torch.no_grad():
            opt.step(params, dict(zip(leaves, grads, strict=True)), stacked)
        losses.append(per_device.detach())
    return torch.stack(losses) if losses else torch.zeros(0, 0)
