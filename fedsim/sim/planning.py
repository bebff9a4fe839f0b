"""A round before it runs: who is selected, and every device's and edge's drawn phases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsim.algorithms.base import Algorithm
from fedsim.config import Scenario
from fedsim.models import ModelInfo
from fedsim.profiles import ProfileLibrary
from fedsim.seeding import Purpose, stream
from fedsim.sim.availability import Availability
from fedsim.sim.costs import Transfer, aggregation_s, energy_j, jittered_s, steps_s, transfer
from fedsim.sim.keyed import KeyedStreams
from fedsim.sim.population import Population
from fedsim.sim.sync_round import DeviceOutcome, DevicePlan


@dataclass(frozen=True)
class Payloads:
    """Bytes of what crosses a link: the model down, an update up."""

    download_bytes: int
    upload_bytes: int


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
    """

    profiles: ProfileLibrary
    model: ModelInfo
    algorithm: Algorithm
    payloads: Payloads
    samples: np.ndarray


class RoundPlanner:
    """Selection and the cost-model draws of a round; no clock of its own.

    Every draw comes from a keyed stream (seed, purpose, device or edge, round), so a plan
    depends on the scenario, the profiles and the virtual time it is made at, never on the
    order of the draws or on training.

    Parameters
    ----------
    scenario : Scenario
        The validated scenario.
    inputs : SimulationInputs
        Profiles, model description, algorithm, payload sizes, samples per device.
    population : Population
        The device table.
    availability : Availability
        When each device is on line.
    """

    def __init__(
        self,
        scenario: Scenario,
        inputs: SimulationInputs,
        population: Population,
        availability: Availability,
    ) -> None:
        self.scenario = scenario
        self.inputs = inputs
        self.population = population
        self.availability = availability
        lib = inputs.profiles
        self._device_hw = [lib.device(g.hardware) for g in population.groups]
        self._access = [lib.link(g.link) for g in population.groups]
        self._edge_hw = [lib.device(e.hardware) for e in scenario.topology.edges]
        self._backhaul = [lib.link(e.backhaul) for e in scenario.topology.edges]
        self._cloud_hw = lib.device(scenario.topology.cloud.hardware)
        self._steps_s_cache: dict[tuple[int, int], float] = {}  # (group, samples) -> seconds

    def wanted(self) -> int:
        """Return K, the reports a round keeps."""
        n = self.population.num_devices
        r = self.scenario.rounds
        if r.participants is not None:
            return r.participants
        if r.participation is not None:
            return max(1, math.ceil(r.participation * n))
        return n

    def select(self, round_index: int, now: float) -> np.ndarray:
        """Choose ``ceil(K * over_selection)`` on-line devices uniformly; sorted ids.

        With on/off availability, the devices are the first on-line ones of a keyed random
        permutation; only as many devices are asked as it takes to find them.
        """
        n = self.population.num_devices
        need = min(n, math.ceil(self.wanted() * self.scenario.rounds.over_selection))
        rng = stream(self.scenario.seed, Purpose.SELECT, round_index)
        if self.availability.always_on:
            chosen = rng.choice(n, size=need, replace=False)
            return np.sort(chosen.astype(np.int64))
        order = rng.permutation(n)
        p_on = self.availability.p_on
        found: list[np.ndarray] = []
        missing, first = need, 0
        while missing > 0 and first < n:
            # ask about a few more devices than are expected to be needed
            size = min(n - first, int(missing / p_on * 1.1) + 16)
            ids = order[first : first + size]
            online = ids[self.availability.online_mask(ids, now)][:missing]
            found.append(online)
            missing -= online.shape[0]
            first += size
        return np.sort(np.concatenate(found).astype(np.int64)) if found else order[:0]

    def _steps_s(self, group: int, num_samples: int) -> float:
        """Return a group's device's training seconds for ``num_samples``, before jitter."""
        seconds = self._steps_s_cache.get((group, num_samples))
        if seconds is None:
            model = self.inputs.model
            seconds = steps_s(
                self._device_hw[group],
                model.name,
                model.forward_flops_per_sample,
                self.inputs.algorithm.steps(num_samples),
            )
            self._steps_s_cache[(group, num_samples)] = seconds
        return seconds

    def plan(
        self,
        device_id: int,
        round_index: int,
        fetch_s: float,
        now: float,
        rng: np.random.Generator | None = None,
    ) -> DevicePlan:
        """Draw one device's round: access transfers, training time, drop-out time.

        ``rng`` is the device's ``DEVICE_ROUND`` stream for this round (made when None).
        """
        group = int(self.population.group_of[device_id])
        hw, link = self._device_hw[group], self._access[group]
        if rng is None:
            rng = stream(self.scenario.seed, Purpose.DEVICE_ROUND, device_id, round_index)
        payloads = self.inputs.payloads
        down = transfer(link, payloads.download_bytes, up=False, rng=rng)
        compute = jittered_s(hw, self._steps_s(group, int(self.inputs.samples[device_id])), rng)
        up = transfer(link, payloads.upload_bytes, up=True, rng=rng)
        offline = self.availability.offline_after(device_id, now)
        edge = int(self.population.edge_of[device_id])
        return DevicePlan(device_id, edge, fetch_s, down, compute, up, offline)

    def plans(
        self, selected: np.ndarray, round_index: int, now: float
    ) -> tuple[list[DevicePlan], dict[int, Transfer]]:
        """Return the selected devices' plans and the edges' model fetches (after a sync)."""
        edge_of = self.population.edge_of[selected]
        fetch = self.edge_fetch(set(edge_of.tolist()), round_index)
        streams = KeyedStreams(self.scenario.seed, Purpose.DEVICE_ROUND, (), (round_index,))
        seeded = streams.states(selected)
        states: list[tuple[int, int] | None] = (
            [None] * len(selected) if seeded is None else [*seeded]
        )
        plans = [
            self.plan(
                d, round_index, fetch[e].duration_s if e in fetch else 0.0, now,
                streams.generator(d, state),
            )
            for d, e, state in zip(selected.tolist(), edge_of.tolist(), states, strict=True)
        ]  # fmt: skip
        return plans, fetch

    def edge_fetch(self, edge_ids: set[int], round_index: int) -> dict[int, Transfer]:
        """Model each edge fetching the new global model from the cloud (after a sync)."""
        if round_index % self.scenario.rounds.cloud_every != 0:
            return {}
        nbytes = self.inputs.payloads.download_bytes
        return {
            e: transfer(
                self._backhaul[e], nbytes, up=False,
                rng=stream(self.scenario.seed, Purpose.BACKHAUL, e, round_index, 0),
            )
            for e in sorted(edge_ids)
        }  # fmt: skip

    def edge_phase(
        self, used: list[DeviceOutcome], sync: bool, round_index: int
    ) -> tuple[float, int]:
        """Return the edges' time (aggregate, then forward to the cloud) and backhaul bytes."""
        per_edge: dict[int, int] = {}
        for o in used:
            per_edge[o.plan.edge_id] = per_edge.get(o.plan.edge_id, 0) + 1
        longest, nbytes = 0.0, 0
        for e, count in sorted(per_edge.items()):
            seconds = aggregation_s(self._edge_hw[e], self.inputs.model.num_params, count)
            if sync:
                t = transfer(
                    self._backhaul[e], self.inputs.payloads.upload_bytes, up=True,
                    rng=stream(self.scenario.seed, Purpose.BACKHAUL, e, round_index, 1),
                )  # fmt: skip
                seconds += t.duration_s
                nbytes += t.num_bytes
            longest = max(longest, seconds)
        return longest, nbytes

    def cloud_s(self) -> float:
        """Return the cloud's time to aggregate the edges' models."""
        return aggregation_s(self._cloud_hw, self.inputs.model.num_params, len(self._edge_hw))

    def energy(self, o: DeviceOutcome) -> float:
        """Return the joules a device spent in its round (receive, compute, transmit)."""
        hw = self._device_hw[int(self.population.group_of[o.plan.device_id])]
        return energy_j(hw, o.access_down_s, o.compute_s, o.upload_s)
