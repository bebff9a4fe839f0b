"""Device availability: always on, or a per-device alternating on/off process."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsim.config import AvailabilitySpec
from fedsim.seeding import Purpose, stream

_BLOCK = 32


@dataclass
class _Timeline:
    """Switch times of one device, extended lazily; ``online`` is the state before switch 0."""

    rng: np.random.Generator
    online_first: bool
    switches: list[float] = field(default_factory=list)


class Availability:
    """When each device is on line.

    With ``kind: on_off`` each device alternates exponential on and off periods with the
    given means, starting in the stationary state; its whole timeline is a function of the
    seed and the device id alone (its own keyed stream), so it never depends on what other
    devices did or on the order of queries.

    Parameters
    ----------
    spec : AvailabilitySpec
        The scenario's availability block.
    seed : int
        The scenario seed.
    """

    def __init__(self, spec: AvailabilitySpec, seed: int) -> None:
        self._spec = spec
        self._seed = seed
        self._timelines: dict[int, _Timeline] = {}

    @property
    def always_on(self) -> bool:
        """Return True when every device is always on line."""
        return self._spec.kind == "always_on"

    def _timeline(self, device_id: int) -> _Timeline:
        tl = self._timelines.get(device_id)
        if tl is None:
            rng = stream(self._seed, Purpose.AVAILABILITY, device_id)
            p_on = self._spec.mean_on_s / (self._spec.mean_on_s + self._spec.mean_off_s)
            tl = _Timeline(rng, bool(rng.random() < p_on))
            self._timelines[device_id] = tl
        return tl

    def _extend_past(self, tl: _Timeline, t: float) -> None:
        while not tl.switches or tl.switches[-1] <= t:
            k = len(tl.switches)
            online = tl.online_first == (k % 2 == 0)
            # period k starts in state `online`; its duration has that state's mean
            means = np.where(
                (np.arange(_BLOCK) % 2 == 0) == online,
                self._spec.mean_on_s,
                self._spec.mean_off_s,
            )
            durations = tl.rng.exponential(1.0, _BLOCK) * means
            start = tl.switches[-1] if tl.switches else 0.0
            tl.switches.extend((start + np.cumsum(durations)).tolist())

    def online_at(self, device_id: int, t: float) -> bool:
        """Return whether the device is on line at virtual time ``t``."""
        if self.always_on:
            return True
        tl = self._timeline(device_id)
        self._extend_past(tl, t)
        k = int(np.searchsorted(tl.switches, t, side="right"))
        return tl.online_first == (k % 2 == 0)

    def offline_after(self, device_id: int, t: float) -> float:
        """Return the first time after ``t`` at which an on-line device goes off line."""
        if self.always_on:
            return math.inf
        tl = self._timeline(device_id)
        self._extend_past(tl, t)
        k = int(np.searchsorted(tl.switches, t, side="right"))
        return float(tl.switches[k])
