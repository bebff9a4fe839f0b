"""Cost models: transfer time over a link, training time on a device, energy (DESIGN.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsim.profiles import DeviceProfile, LinkProfile

BITS_PER_BYTE = 8


@dataclass(frozen=True)
class Transfer:
    """One modelled transfer: a round trip, then the bytes at most at the drawn rate.

    Attributes
    ----------
    duration_s : float
        Seconds it takes alone at its own rate: ``rtt_s + bits / rate`` (a lower bound
        once it shares a capacity with others).
    rtt_s : float
        The round trip before data flows.
    num_bytes : int
        Payload.
    mbps : float
        The transfer's own maximum rate (the device's link), Mbps.
    """

    duration_s: float
    rtt_s: float
    num_bytes: int
    mbps: float = math.inf

    @property
    def bits(self) -> float:
        """Return the payload in bits."""
        return float(self.num_bytes * BITS_PER_BYTE)

    @property
    def cap_bps(self) -> float:
        """Return the transfer's own maximum rate in bits per second."""
        return self.mbps * 1e6


def draw_mbps(median_mbps: float, sigma: float, rng: np.random.Generator) -> float:
    """Draw a bandwidth from a lognormal with the given median and log-sigma."""
    if sigma <= 0:
        return median_mbps
    return float(median_mbps * np.exp(sigma * rng.standard_normal()))


def transfer(
    link: LinkProfile,
    num_bytes: int,
    up: bool,
    rng: np.random.Generator,
    quality: float = 1.0,
) -> Transfer:
    """Model one transfer: ``rtt + bytes / bandwidth``, bandwidth drawn per transfer.

    ``quality`` is the device's lasting link-quality factor (:func:`link_quality`).
    """
    if up:
        mbps = draw_mbps(link.up_mbps_median, link.up_sigma, rng)
    else:
        mbps = draw_mbps(link.down_mbps_median, link.down_sigma, rng)
    return fixed_transfer(link.rtt_s, num_bytes, mbps * quality)


def fixed_transfer(rtt_s: float, num_bytes: int, mbps: float) -> Transfer:
    """Return a transfer of ``num_bytes`` at ``mbps`` after a round trip of ``rtt_s``."""
    seconds = rtt_s + num_bytes * BITS_PER_BYTE / (mbps * 1e6)
    return Transfer(seconds, rtt_s, num_bytes, mbps)


def link_quality(link: LinkProfile, rng: np.random.Generator) -> float:
    """Draw a device's lasting link-quality factor ``exp(device_sigma * z)`` (1 if no spread)."""
    if link.device_sigma <= 0:
        return 1.0
    return float(np.exp(link.device_sigma * rng.standard_normal()))


def steps_s(
    device: DeviceProfile,
    model_name: str,
    forward_flops_per_sample: float,
    batch_sizes: list[int] | np.ndarray,
) -> float:
    """Return the sum of per-step times of local training, without jitter (deterministic).

    Parameters
    ----------
    device : DeviceProfile
        The device's hardware.
    model_name : str
        Model name (a profile's measured seconds per batch for it win over FLOPs).
    forward_flops_per_sample : float
        Forward FLOPs of one sample.
    batch_sizes : sequence of int
        The size of every SGD step's batch.
    """
    sizes, counts = np.unique(np.asarray(batch_sizes, dtype=np.int64), return_counts=True)
    return sum(
        float(c) * device.step_s(model_name, forward_flops_per_sample, int(b))
        for b, c in zip(sizes, counts, strict=True)
    )


def jittered_s(device: DeviceProfile, seconds: float, rng: np.random.Generator) -> float:
    """Return ``seconds`` times the device's lognormal jitter factor (one draw if jittered)."""
    if device.jitter_sigma > 0:
        seconds *= float(np.exp(device.jitter_sigma * rng.standard_normal()))
    return seconds


AGGREGATION_FLOPS_PER_VALUE = 2.0  # a weighted average: one multiply and one add per value


def aggregation_flops(num_params: int, num_updates: int) -> float:
    """Return the work of a weighted average of ``num_updates`` models on a server."""
    return AGGREGATION_FLOPS_PER_VALUE * num_params * max(num_updates, 0)


@dataclass(frozen=True)
class Energy:
    """A device's joules in a round, by kind."""

    compute_j: float
    radio_j: float
    idle_j: float

    @property
    def total_j(self) -> float:
        """Return the sum of the kinds."""
        return self.compute_j + self.radio_j + self.idle_j


def energy_j(
    device: DeviceProfile, receive_s: float, compute_s: float, transmit_s: float, idle_s: float
) -> Energy:
    """Return a device's energy: receive and transmit (radio), compute, and idle waiting."""
    return Energy(
        compute_s * device.power_compute_w,
        receive_s * device.power_receive_w + transmit_s * device.power_transmit_w,
        idle_s * device.power_idle_w,
    )
