"""Cost models: transfer time over a link, training time on a device, energy (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.profiles import DeviceProfile, LinkProfile

BITS_PER_BYTE = 8


@dataclass(frozen=True)
class Transfer:
    """One modelled transfer: its duration and the bandwidth that was drawn."""

    duration_s: float
    rtt_s: float
    num_bytes: int

    def bytes_done_by(self, elapsed_s: float) -> int:
        """Return how many bytes had arrived ``elapsed_s`` after the transfer began."""
        if elapsed_s >= self.duration_s:
            return self.num_bytes
        payload_s = self.duration_s - self.rtt_s
        if payload_s <= 0 or elapsed_s <= self.rtt_s:
            return 0
        return int(self.num_bytes * (elapsed_s - self.rtt_s) / payload_s)


def draw_mbps(median_mbps: float, sigma: float, rng: np.random.Generator) -> float:
    """Draw a bandwidth from a lognormal with the given median and log-sigma."""
    if sigma <= 0:
        return median_mbps
    return float(median_mbps * np.exp(sigma * rng.standard_normal()))


def transfer(link: LinkProfile, num_bytes: int, up: bool, rng: np.random.Generator) -> Transfer:
    """Model one transfer: ``rtt + bytes / bandwidth``, bandwidth drawn per transfer."""
    if up:
        mbps = draw_mbps(link.up_mbps_median, link.up_sigma, rng)
    else:
        mbps = draw_mbps(link.down_mbps_median, link.down_sigma, rng)
    seconds = link.rtt_s + num_bytes * BITS_PER_BYTE / (mbps * 1e6)
    return Transfer(seconds, link.rtt_s, num_bytes)


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


def aggregation_s(host: DeviceProfile, num_params: int, num_updates: int) -> float:
    """Model a weighted average of ``num_updates`` models on a server (2 FLOPs per value)."""
    if num_updates <= 0:
        return 0.0
    return 2.0 * num_params * num_updates / host.flops_per_s


def energy_j(device: DeviceProfile, receive_s: float, compute_s: float, transmit_s: float) -> float:
    """Return the energy of a device's active phases (receive, compute, transmit)."""
    return (
        receive_s * device.power_receive_w
        + compute_s * device.power_compute_w
        + transmit_s * device.power_transmit_w
    )
