"""A round before it runs: who is selected, and every device's and edge's drawn phases."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedsim.config import RoundsSpec, Scenario
from fedsim.seeding import Purpose, stream
from fedsim.sim.availability import Availability
from fedsim.sim.costs import (
    Energy,
    Transfer,
    energy_j,
    fixed_transfer,
    jittered_s,
    link_quality,
    steps_s,
    transfer,
)
from fedsim.sim.inputs import SimulationInputs
from fedsim.sim.keyed import KeyedStreams
from fedsim.sim.offloading import (
    DeviceTask,
    OffloadPlanner,
    build_policies,
    jitter_factor,
)
from fedsim.sim.population import Population
from fedsim.sim.records import DeviceOutcome, DevicePlan


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
        policies = inputs.policies or build_policies(scenario, "scenario")
        self.offload = OffloadPlanner(
            scenario, population, policies, self._device_hw, self._access, self._edge_hw,
            [inputs.model_of_group(g) for g in range(len(population.groups))],
            inputs.payloads.download_bytes, inputs.sample_bytes,
            inputs.algorithm.optimizer_values_per_param,
        )  # fmt: skip
        self._steps_s_cache: dict[tuple[int, int], float] = {}  # (group, samples) -> seconds
        self._batches_cache: dict[int, tuple[int, ...]] = {}
        self._local_fits: dict[tuple[int, int], bool] = {}  # (group, samples) -> fits memory
        # lasting link quality per device, drawn when first needed (8 bytes a device)
        self._quality = np.full(population.num_devices, np.nan)
        self._quality_streams = KeyedStreams(scenario.seed, Purpose.LINK_QUALITY)

    def _qualities(self, selected: np.ndarray) -> np.ndarray:
        """Return the selected devices' lasting link-quality factors (keyed by device)."""
        q = self._quality[selected]
        missing = selected[np.isnan(q)]
        if missing.size:
            states = self._quality_streams.states(missing)
            for i, d in enumerate(missing.tolist()):
                link = self._access[int(self.population.group_of[d])]
                rng = self._quality_streams.generator(d, None if states is None else states[i])
                self._quality[d] = link_quality(link, rng)
            q = self._quality[selected]
        return q

    def wanted(self) -> int:
        """Return K, the reports a round keeps."""
        n = self.population.num_devices
        r = self.scenario.rounds
        assert isinstance(r, RoundsSpec), "K is a synchronous round's"
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
        rounds = self.scenario.rounds
        assert isinstance(rounds, RoundsSpec), "selection of a synchronous round"
        need = min(n, math.ceil(self.wanted() * rounds.over_selection))
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
            model = self.inputs.model_of_group(group)
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
        quality: float = 1.0,
    ) -> DevicePlan:
        """Draw one device's round: access transfers, training time, drop-out time.

        ``rng`` is the device's ``DEVICE_ROUND`` stream for this round (made when None);
        ``quality`` its lasting link-quality factor. A device a bandwidth trace covers
        takes its rates from the trace as it transfers: its plan's transfers carry only
        their round trips (a lower bound of their duration).
        """
        group = int(self.population.group_of[device_id])
        hw, link = self._device_hw[group], self._access[group]
        if rng is None:
            rng = stream(self.scenario.seed, Purpose.DEVICE_ROUND, device_id, round_index)
        payloads = self.inputs.payloads
        samples = int(self.inputs.samples[device_id])
        down = transfer(link, payloads.download_bytes, up=False, rng=rng, quality=quality)
        base_s = self._steps_s(group, samples)
        compute = jittered_s(hw, base_s, rng)
        up = transfer(link, payloads.upload_bytes, up=True, rng=rng, quality=quality)
        trace = self.inputs.bandwidth
        if trace is not None and trace.covers(device_id):
            down = fixed_transfer(link.rtt_s, payloads.download_bytes, math.inf)
            up = fixed_transfer(link.rtt_s, payloads.upload_bytes, math.inf)
        offline = self.availability.offline_after(device_id, now)
        edge = int(self.population.edge_of[device_id])
        key = (group, samples)
        fits = self._local_fits.get(key)
        if fits is None:
            fits = self._local_fits[key] = self.offload.fits_group(
                group, self._batches(samples), None
            )
        if self.offload.local_only and fits:  # the common case: no policy to ask
            return DevicePlan(device_id, edge, fetch_s, down, compute, up, offline, group)
        task = DeviceTask(
            device_id, group, edge, round_index, samples, self._batches(samples), quality,
            jitter_factor(compute, base_s), self.scenario.rounds.deadline_s,
        )  # fmt: skip
        choice = self.offload.choose(task)
        work = choice.work
        if work is not None:  # the device moves only its part of the model (none: full)
            part = work.model_fraction
            down = fixed_transfer(down.rtt_s, round(down.num_bytes * part), down.mbps)
            up = fixed_transfer(up.rtt_s, round(up.num_bytes * part), up.mbps)
        return DevicePlan(
            device_id, edge, fetch_s, down, compute, up, offline, group, choice.oom, work,
            choice.stay_online,
        )  # fmt: skip

    def plan_one(self, device_id: int, key: int, fetch_s: float, now: float) -> DevicePlan:
        """Return an asynchronous dispatch's plan: its streams keyed by dispatch ``key``.

        An offloading policy sees no other device's load at the edge (each dispatch is a
        round of one).
        """
        self.offload.new_round()
        quality = float(self._qualities(np.array([device_id], dtype=np.int64))[0])
        return self.plan(device_id, key, fetch_s, now, None, quality)

    def _batches(self, num_samples: int) -> tuple[int, ...]:
        batches = self._batches_cache.get(num_samples)
        if batches is None:
            batches = tuple(self.inputs.algorithm.steps(num_samples))
            self._batches_cache[num_samples] = batches
        return batches

    def plans(
        self, selected: np.ndarray, round_index: int, now: float, fetch: dict[int, Transfer]
    ) -> list[DevicePlan]:
        """Return the selected devices' plans; ``fetch`` holds the edges fetching the model."""
        edge_of = self.population.edge_of[selected]
        self.offload.new_round()
        streams = KeyedStreams(self.scenario.seed, Purpose.DEVICE_ROUND, (), (round_index,))
        seeded = streams.states(selected)
        states: list[tuple[int, int] | None] = (
            [None] * len(selected) if seeded is None else [*seeded]
        )
        qualities = self._qualities(selected).tolist()
        return [
            self.plan(
                d, round_index, fetch[e].duration_s if e in fetch else 0.0, now,
                streams.generator(d, state), q,
            )
            for d, e, state, q in zip(
                selected.tolist(), edge_of.tolist(), states, qualities, strict=True
            )
        ]  # fmt: skip

    def _backhaul_transfer(
        self, edge_id: int, round_index: int, up: bool, copies: int = 1
    ) -> Transfer:
        p = self.inputs.payloads
        return transfer(
            self._backhaul[edge_id], copies * (p.upload_bytes if up else p.download_bytes),
            up=up, rng=stream(self.scenario.seed, Purpose.BACKHAUL, edge_id, round_index, int(up)),
        )  # fmt: skip

    def edge_fetch(
        self, edge_ids: set[int], round_index: int, copies: Mapping[int, int] | None = None
    ) -> dict[int, Transfer]:
        """Draw each listed edge's fetch of the global model from the cloud.

        ``copies``: per edge, how many devices' payloads it fetches (an algorithm whose
        edges relay, :attr:`~fedsim.algorithms.base.Algorithm.edge_relays`); None: one.
        """
        return {
            e: self._backhaul_transfer(e, round_index, False, (copies or {}).get(e, 1))
            for e in sorted(edge_ids)
        }

    def edge_uploads(
        self, edge_ids: set[int], round_index: int, copies: Mapping[int, int] | None = None
    ) -> dict[int, Transfer]:
        """Draw each listed edge's upload of its model to the cloud (at a sync).

        ``copies``: per edge, how many devices' payloads it relays (as for the fetch).
        """
        return {
            e: self._backhaul_transfer(e, round_index, True, (copies or {}).get(e, 1))
            for e in sorted(edge_ids)
        }

    def energy(self, o: DeviceOutcome) -> Energy:
        """Return a device's joules in its round: radio, compute, and idle while waiting.

        Idle: waiting for the edge's fetch of the model and, once reported, for the round
        to close.
        """
        hw = self._device_hw[int(self.population.group_of[o.plan.device_id])]
        return energy_j(hw, o.rx_s, o.device_compute_s, o.tx_s, o.idle_s)
