"""What the simulation driver needs besides the scenario: profiles, models, payload sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.algorithms.base import Algorithm
from fedsim.models import ModelInfo
from fedsim.profiles import ProfileLibrary
from fedsim.sim.network import BandwidthSource
from fedsim.sim.offloading import GroupOffload
from fedsim.sim.traces import AvailabilityTrace


@dataclass(frozen=True)
class Payloads:
    """Bytes of what crosses a link (the model down, an update up), and values averaged.

    ``upload_values``: the values of one update, which a server averages (its cost).
    """

    download_bytes: int
    upload_bytes: int
    upload_values: int


@dataclass(frozen=True)
class SimulationInputs:
    """What the driver needs besides the scenario (built by :mod:`fedsim.api`).

    Attributes
    ----------
    profiles : ProfileLibrary
        Hardware and link profiles.
    model : ModelInfo
        Model description: parameter count, per-sample forward FLOPs.
    algorithm : Algorithm
        Decides each device's local steps.
    payloads : Payloads
        Bytes down and up per device.
    samples : np.ndarray
        Training samples per device, by device id.
    footprint_bytes : int
        Memory a device needs to train the model (0: not checked).
    bandwidth : BandwidthSource or None
        A bandwidth trace for the devices it covers.
    availability_trace : AvailabilityTrace or None
        An availability trace for the devices it covers.
    sample_bytes : int
        Bytes of one training sample (a full offload uploads the device's samples).
    policies : list or None
        Per device group, its offloading (None: from the scenario).
    noisy_devices : frozenset of int
        The noisy clients (``data.noise``), for ``ua_mean_clean``.
    group_models : tuple of ModelInfo
        Per device group, the model its devices train (empty: ``model`` for all).
    """

    profiles: ProfileLibrary
    model: ModelInfo
    algorithm: Algorithm
    payloads: Payloads
    samples: np.ndarray
    footprint_bytes: int = 0
    bandwidth: BandwidthSource | None = None
    availability_trace: AvailabilityTrace | None = None
    sample_bytes: int = 0
    policies: list[GroupOffload] | None = None
    noisy_devices: frozenset[int] = frozenset()
    group_models: tuple[ModelInfo, ...] = ()

    def model_of_group(self, group: int) -> ModelInfo:
        """Return the model a device group trains."""
        return self.group_models[group] if self.group_models else self.model
