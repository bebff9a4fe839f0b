"""A model's training memory footprint on a device, from its description."""

from __future__ import annotations

from fedsim.models.info import ModelInfo

BYTES_PER_VALUE = 4  # float32


def training_footprint_bytes(
    info: ModelInfo, batch_size: int, optimizer_values_per_param: int = 0, layers: int | None = None
) -> int:
    """Return the bytes a device needs to train ``info`` at ``batch_size``.

    Counted: the parameters, their gradients and the optimiser's values per parameter;
    the floating-point buffers (BatchNorm statistics); and every executed layer's output
    for the whole batch, which the backward pass keeps (the input batch is the first of
    these only when a layer copies it, so it is not counted separately). Framework and
    interpreter overheads are not counted: the figure is what the model itself needs.

    Parameters
    ----------
    info : ModelInfo
        The model's description (:func:`fedsim.models.describe`).
    batch_size : int
        Samples in the largest training batch.
    optimizer_values_per_param : int
        Values the optimiser keeps per parameter (0 for SGD, 2 for Adam).
    layers : int, optional
        Count only the first ``layers`` executed layers (a device's part of a split model);
        buffers are then not counted.
    """
    if layers is None:
        params, buffers, kept = info.num_params, info.num_buffers, info.layers
    else:
        kept = info.layers[:layers]
        params, buffers = sum(layer.params for layer in kept), 0
    values = params * (2 + optimizer_values_per_param) + buffers
    activations = batch_size * sum(layer.output_elements_per_sample for layer in kept)
    return BYTES_PER_VALUE * (values + activations)
