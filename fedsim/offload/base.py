"""The offloading policy interface: what a policy sees about a device, and what it returns.

A policy is the users' main extension point: one class with one method. Each round, for
each selected device (in device-id order), the driver builds a :class:`DeviceView` and
calls :meth:`OffloadPolicy.choose`, which returns a :class:`~fedsim.offload.plans.Plan`.
A policy must be deterministic: any randomness comes from ``view.rng``, a keyed stream of
(seed, device, round). ``docs/offloading.md`` has a worked example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedsim.models import ModelInfo
from fedsim.offload.plans import FULL, LOCAL, Plan, split_at
from fedsim.profiles import DeviceProfile, LinkProfile


class NoParams(BaseModel):
    """A policy without parameters."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class Estimate:
    """A plan's estimated cost for one device, before the round runs.

    Attributes
    ----------
    time_s : float
        Seconds from the device's start to its report: its own link rates (median times
        its lasting quality), no jitter, the edge's compute divided by its load.
    device_energy_j : float
        The device's joules (compute, radio, idle while the edge works for it).
    fits : bool
        Whether the device's memory holds its part of the training.
    """

    time_s: float
    device_energy_j: float
    fits: bool


@dataclass(frozen=True)
class HistoryEntry:
    """One of a device's earlier rounds: its plan, status and seconds from start to end."""

    round_index: int
    plan: str
    status: str
    duration_s: float


@dataclass(frozen=True)
class DeviceView:
    """What a policy knows about a selected device when it chooses.

    Attributes
    ----------
    device_id, edge_id, round_index : int
        Who, under which edge, which round.
    device, edge : DeviceProfile
        Their hardware profiles.
    edge_trusted : bool
        Whether the device may hand its raw data to the edge (``full``).
    link : LinkProfile
        The device's access link.
    link_quality : float
        The device's lasting link-quality factor (its rates are the link's medians times it).
    model : ModelInfo
        Layer by layer: FLOPs, parameters, activation sizes (``model.layers``).
    num_samples : int
        Training samples the device holds.
    batch_sizes : tuple of int
        Every local step's batch size.
    deadline_s : float or None
        The round's deadline.
    edge_load : int
        Devices already offloaded to this edge this round (chosen before this one).
    data_at_edge : bool
        Whether the edge already holds this device's training data.
    history : tuple of HistoryEntry
        The device's most recent rounds, oldest first.
    rng : numpy.random.Generator
        The policy's keyed stream for this device and round (made when first read).
    """

    device_id: int
    edge_id: int
    round_index: int
    device: DeviceProfile
    edge: DeviceProfile
    edge_trusted: bool
    link: LinkProfile
    link_quality: float
    model: ModelInfo
    num_samples: int
    batch_sizes: tuple[int, ...]
    deadline_s: float | None
    edge_load: int
    data_at_edge: bool
    history: tuple[HistoryEntry, ...]
    rng_factory: Callable[[], np.random.Generator] = field(repr=False)
    estimator: Callable[[Plan], Estimate] = field(repr=False)

    @cached_property
    def rng(self) -> np.random.Generator:
        """Return the policy's keyed stream for this device and round."""
        return self.rng_factory()

    def estimate(self, plan: Plan) -> Estimate:
        """Return the estimated time, device energy and memory fit of ``plan``."""
        return self.estimator(plan)

    def candidates(self) -> list[Plan]:
        """Return every plan this device could use: local, full (trusted edge), each split."""
        plans = [LOCAL]
        if self.edge_trusted:
            plans.append(FULL)
        plans.extend(split_at(k) for k in range(1, len(self.model.layers)))
        return plans

    def fastest(self, within: list[Plan] | None = None) -> Plan:
        """Return the plan with the least estimated time.

        Among ``within`` (default: every candidate) the plans that fit the device's memory;
        ties go to the earlier candidate (local first).
        """
        plans = [p for p in (within or self.candidates()) if self.estimate(p).fits]
        if not plans:
            return LOCAL  # nothing fits: the memory rule makes it oom
        return min(plans, key=lambda p: self.estimate(p).time_s)


class OffloadPolicy(ABC):
    """Base class of an offloading policy (one file per policy).

    Subclasses set ``Params`` to a pydantic model of their scenario parameters and
    implement :meth:`choose`.
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    #: Set True to receive the devices' recent rounds in ``view.history`` (kept only then).
    uses_history: ClassVar[bool] = False

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @abstractmethod
    def choose(self, view: DeviceView) -> Plan:
        """Return the plan for the device ``view`` describes, this round."""
