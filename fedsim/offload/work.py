"""The work an offloading plan puts on the device, its links and the edge, batch by batch.

Split at ``k`` (the first ``k`` executed layers on the device): for a batch of ``b``
samples the device runs its layers forward, sends their output up (``b`` times the k-th
layer's output elements, float32), the edge runs the rest forward and backward (3 times
their forward FLOPs), sends the gradient of that output down (the same size) and the
device runs its layers backward (2 times their forward FLOPs). Each side's seconds are the
profile's step time scaled by its share of the model's FLOPs, so a split's two halves add
up to local training; the device's jitter factor applies to its part.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.models import ModelInfo
from fedsim.offload.plans import Plan
from fedsim.profiles import DeviceProfile

BYTES_PER_VALUE = 4  # float32 activations and gradients
TRAINING_FLOPS_PER_FORWARD = 3.0
BACKWARD_SHARE = 2.0 / 3.0  # of a step's device time: backward is 2 of its 3 forward units


@dataclass(frozen=True)
class SplitBatch:
    """One batch of a split plan.

    Attributes
    ----------
    device_before_s : float
        Device seconds before the activations go up: this batch's forward, plus the
        previous batch's backward.
    act_bits : float
        Activations up, and their gradients down, in bits each.
    edge_flops : float
        The edge's work for the batch (FLOPs, or FLOP-equivalents of measured seconds).
    count : int
        Batches this step carries (``batches_per_step``): the fields are their sums, and
        each of them pays the uplink's round-trip delay.
    """

    device_before_s: float
    act_bits: float
    edge_flops: float
    count: int = 1


@dataclass(frozen=True)
class OffloadWork:
    """What an offloaded plan does in a round (nothing for ``local``).

    Attributes
    ----------
    plan : Plan
        The plan.
    batches : tuple of SplitBatch
        ``split``: the batches in order.
    device_tail_s : float
        ``split``: the last batch's backward on the device.
    device_compute_s : float
        Seconds the device computes in all.
    data_bits : float
        ``full``: training data the device uploads this round (0 once the edge holds it).
    edge_flops : float
        ``full``: the edge's training work.
    model_fraction : float
        Share of the model's parameters the device downloads and uploads (``split``: its
        layers; ``full``: 0, the edge holds the model).
    """

    plan: Plan
    batches: tuple[SplitBatch, ...] = ()
    device_tail_s: float = 0.0
    device_compute_s: float = 0.0
    data_bits: float = 0.0
    edge_flops: float = 0.0
    model_fraction: float = 1.0


def device_layers_share(model: ModelInfo, k: int) -> tuple[float, float]:
    """Return the device's share of the forward FLOPs and of the parameters at split ``k``."""
    total_flops = model.forward_flops_per_sample
    total_params = max(model.num_params, 1)
    flops = sum(layer.forward_flops_per_sample for layer in model.layers[:k])
    params = sum(layer.params for layer in model.layers[:k])
    return (flops / total_flops if total_flops > 0 else 0.0), params / total_params


def split_work(
    plan: Plan,
    model: ModelInfo,
    device: DeviceProfile,
    edge: DeviceProfile,
    batch_sizes: list[int],
    jitter: float,
    batches_per_step: int | None = 1,
) -> OffloadWork:
    """Return a split plan's steps for a device training ``batch_sizes``.

    ``batches_per_step`` batches go in one step (None: all of them); the device's last
    backward stays the tail.
    """
    k = plan.k
    flops_share, param_share = device_layers_share(model, k)
    act_values = model.layers[k - 1].output_elements_per_sample
    fwd = model.forward_flops_per_sample
    cache: dict[int, tuple[float, float, float, float]] = {}
    size = batches_per_step or max(len(batch_sizes), 1)
    steps = []
    backward_s = device_s = 0.0
    before_s = bits = edge_flops = 0.0
    count = 0
    for b in batch_sizes:
        if b not in cache:
            step = device.step_s(model.name, fwd, b) * jitter * flops_share
            edge_s = edge.step_s(model.name, fwd, b) * (1.0 - flops_share)
            cache[b] = (
                step * (1 - BACKWARD_SHARE), step * BACKWARD_SHARE,
                float(b * act_values * BYTES_PER_VALUE * 8), edge_s * edge.flops_per_s,
            )  # fmt: skip
        forward_s, back_s, b_bits, b_flops = cache[b]
        before_s += backward_s + forward_s
        bits += b_bits
        edge_flops += b_flops
        count += 1
        if count == size:
            steps.append(SplitBatch(before_s, bits, edge_flops, count))
            before_s = bits = edge_flops = 0.0
            count = 0
        device_s += forward_s + back_s
        backward_s = back_s
    if count:
        steps.append(SplitBatch(before_s, bits, edge_flops, count))
    return OffloadWork(plan, tuple(steps), backward_s, device_s, model_fraction=param_share)


def full_work(
    plan: Plan,
    model: ModelInfo,
    edge: DeviceProfile,
    batch_sizes: list[int],
    data_bytes: int,
) -> OffloadWork:
    """Return a full offload: the data upload (if any) and the edge's training work."""
    fwd = model.forward_flops_per_sample
    seconds = sum(edge.step_s(model.name, fwd, b) for b in batch_sizes)
    return OffloadWork(
        plan, data_bits=float(data_bytes * 8), edge_flops=seconds * edge.flops_per_s,
        model_fraction=0.0,
    )  # fmt: skip
