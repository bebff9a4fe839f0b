"""Describe a model's size, per-layer FLOPs and activation sizes, measured by a forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import cast

import torch
from torch import nn

#: Element-wise layers: one FLOP per output element.
_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softmax,
    nn.LogSoftmax,
    nn.SiLU,
    nn.Hardtanh,
)
#: Layers that only move data: no FLOPs.
_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class LayerInfo:
    """One executed leaf module.

    Attributes
    ----------
    name : str
        Module path, e.g. ``"0"`` or ``"features.3"``.
    kind : str
        Class name, e.g. ``"Linear"``, ``"Conv2d"``, ``"BatchNorm1d"``, ``"ReLU"``.
    params : int
        Trainable parameters of this module.
    forward_flops_per_sample : float
        Forward FLOPs for one sample (a multiply-add is 2 FLOPs).
    output_elements_per_sample : int
        Elements of this module's output for one sample (the activation a split
        after this layer would send).
    """

    name: str
    kind: str
    params: int
    forward_flops_per_sample: float
    output_elements_per_sample: int


@dataclass(frozen=True)
class ModelInfo:
    """Sizes and costs of a model.

    Attributes
    ----------
    name : str
        The model's name.
    num_params : int
        Trainable parameters (elements).
    num_buffers : int
        Floating-point buffer elements (BatchNorm running mean and variance); integer
        buffers such as ``num_batches_tracked`` are not counted.
    param_bytes : int
        Bytes of the floating-point tensors of the state dict (parameters and buffers),
        i.e. what a full-model transfer sends.
    forward_flops_per_sample : float
        Sum of the layers' forward FLOPs for one sample.
    layers : tuple of LayerInfo
        Executed leaf modules in execution order.
    """

    name: str
    num_params: int
    num_buffers: int
    param_bytes: int
    forward_flops_per_sample: float
    layers: tuple[LayerInfo, ...]


def layer_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> float:
    """Return the forward FLOPs of ``module`` for a batch (input ``inp``, output ``out``).

    Conventions: Linear ``2 * in * out`` per output row (bias not counted);
    convolutions ``2 * (C_in / groups) * prod(kernel)`` per output element; BatchNorm
    2 per element (a scale and a shift in inference form); max/avg pooling
    ``prod(kernel) - 1`` per output element; element-wise activations 1 per element;
    Flatten, Unflatten, Identity, Dropout 0; any other leaf 1 per output element.
    """
    if isinstance(module, nn.Linear):
        rows = inp.numel() // module.in_features
        return 2.0 * rows * module.in_features * module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = 2.0 * (module.in_channels // module.groups) * prod(module.kernel_size)
        return per_out * out.numel()
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return 2.0 * out.numel()
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        kernel = cast("int | tuple[int, ...]", module.kernel_size)
        dims = kernel if isinstance(kernel, tuple) else (kernel,) * (out.dim() - 2)
        return float(prod(dims) - 1) * out.numel()
    if isinstance(module, _SHAPE_ONLY):
        return 0.0
    return float(out.numel())


def describe(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> ModelInfo:
    """Measure ``model`` with one forward pass of a single zero sample.

    Forward hooks on the leaf modules record each executed layer's input and output.
    The model runs in eval mode under ``no_grad`` (its mode is restored afterwards), so
    BatchNorm statistics are not touched.

    Parameters
    ----------
    model : nn.Module
        The model.
    name : str
        Its name (copied into the result).
    input_shape : tuple of int
        Shape of one input sample.
    """
    records: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    handles = []
    for path, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(
            mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor, path: str = path
        ) -> None:
            records.append((path, mod, args[0], out))

        handles.append(module.register_forward_hook(hook))
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None else torch.float32
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    layers = tuple(
        LayerInfo(
            name=path,
            kind=type(mod).__name__,
            params=sum(p.numel() for p in mod.parameters(recurse=False) if p.requires_grad),
            forward_flops_per_sample=layer_flops(mod, inp, out),
            output_elements_per_sample=out.numel(),
        )
        for path, mod, inp, out in records
    )
    state = model.state_dict()
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    num_buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    param_bytes = sum(t.numel() * t.element_size() for t in state.values() if t.is_floating_point())
    return ModelInfo(
        name=name,
        num_params=num_params,
        num_buffers=num_buffers,
        param_bytes=param_bytes,
        forward_flops_per_sample=float(sum(layer.forward_flops_per_sample for layer in layers)),
        layers=layers,
    )
