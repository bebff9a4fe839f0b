"""Each selected device's offloading plan: ask its policy, apply the memory rule, build the work.

The memory rule: a plan whose device part does not fit the device's memory is replaced by
the fastest plan that fits (an offload to the edge); a device for which nothing fits is
``oom``. Raw data only ever goes to a trusted edge: a policy that asks for ``full`` under an
untrusted edge is an error.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import partial

from fedsim.config import Scenario
from fedsim.errors import InputError
from fedsim.models import ModelInfo, training_footprint_bytes
from fedsim.offload import (
    LOCAL,
    DeviceView,
    Estimate,
    HistoryEntry,
    OffloadPolicy,
    Plan,
    build_policy,
)
from fedsim.offload.local import Local
from fedsim.offload.work import OffloadWork, full_work, split_work
from fedsim.profiles import DeviceProfile, LinkProfile
from fedsim.seeding import Purpose, stream
from fedsim.sim.costs import BITS_PER_BYTE
from fedsim.sim.population import Population

HISTORY_ROUNDS = 4


@dataclass(frozen=True)
class DeviceTask:
    """What the planner knows of a device's local round when the policy chooses."""

    device_id: int
    group: int
    edge_id: int
    round_index: int
    num_samples: int
    batch_sizes: tuple[int, ...]
    quality: float
    jitter: float
    deadline_s: float | None


@dataclass(frozen=True)
class Choice:
    """A device's plan for the round: its work (None: local) or ``oom``."""

    work: OffloadWork | None
    oom: bool
    stay_online: bool


@dataclass(frozen=True)
class GroupOffload:
    """A device group's offloading: its policy and the rules of its plans (OffloadSpec)."""

    policy: OffloadPolicy
    stay_online: bool = True
    batches_per_step: int | None = 1  # None: all of a round's batches in one step


def build_policies(scenario: Scenario, source: str) -> list[GroupOffload]:
    """Return each device group's offloading, in topology order.

    Raises
    ------
    InputError
        An unknown policy or bad params (every group's problems at once).
    """
    problems: list[str] = []
    out: list[GroupOffload] = []
    default = scenario.offload
    cache: dict[str, OffloadPolicy] = {}
    for i, edge in enumerate(scenario.topology.edges):
        for j, group in enumerate(edge.devices):
            spec = group.offload or default
            field = f"topology.edges[{i}].devices[{j}].offload" if group.offload else "offload"
            key = spec.model_dump_json()
            try:
                policy = cache.get(key) or build_policy(spec, field, source)
            except InputError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
                continue
            cache[key] = policy
            per_step = None if spec.batches_per_step == "all" else spec.batches_per_step
            out.append(GroupOffload(policy, spec.stay_online, per_step))
    if problems:
        raise InputError(problems)
    return out


class OffloadPlanner:
    """Chooses and builds the offloading plans of a round's devices.

    Parameters
    ----------
    scenario : Scenario
        The validated scenario.
    population : Population
        The device table.
    policies : list of GroupOffload
        Per device group: its policy and the rules of its plans.
    devices, links : list
        Per device group: hardware and access-link profiles.
    edges : list of DeviceProfile
        Per edge: its hardware.
    models : list of ModelInfo
        Per device group: the model its devices train.
    payload_bytes : int
        The whole model's bytes (down and up).
    sample_bytes : int
        Bytes of one training sample (input and label), for ``full``'s data upload.
    optimizer_values_per_param : int
        The algorithm's optimiser values per parameter (memory).
    """

    def __init__(
        self,
        scenario: Scenario,
        population: Population,
        policies: list[GroupOffload],
        devices: list[DeviceProfile],
        links: list[LinkProfile],
        edges: list[DeviceProfile],
        models: list[ModelInfo],
        payload_bytes: int,
        sample_bytes: int,
        optimizer_values_per_param: int,
    ) -> None:
        self.scenario = scenario
        self.population = population
        self.policies = policies
        self.devices, self.links, self.edges = devices, links, edges
        self.trusted = [e.trusted for e in scenario.topology.edges]
        self.models = models
        self.payload_bytes = payload_bytes
        self.sample_bytes = sample_bytes
        self.opt_values = optimizer_values_per_param
        self.data_at_edge: set[int] = set()
        self.history: dict[int, deque[HistoryEntry]] = {}
        self.keep_history = any(g.policy.uses_history for g in policies)
        self.edge_load: dict[int, int] = {}
        # (model name, batch, layers) -> bytes
        self._footprint: dict[tuple[str, int, int | None], int] = {}
        self.local_only = all(isinstance(g.policy, Local) for g in policies)

    def new_round(self) -> None:
        """Forget the previous round's edge loads."""
        self.edge_load = {}

    def footprint(self, group: int, batch: int, layers: int | None) -> int:
        """Return a group's device's training bytes at ``batch`` (``layers``: a split's part)."""
        model = self.models[group]
        key = (model.name, batch, layers)
        if key not in self._footprint:
            self._footprint[key] = training_footprint_bytes(model, batch, self.opt_values, layers)
        return self._footprint[key]

    def fits(self, task: DeviceTask, plan: Plan) -> bool:
        """Return whether the device's memory holds its part of ``plan``."""
        if plan.kind == "full":
            return True
        layers = plan.k if plan.kind == "split" else None
        return self.fits_group(task.group, task.batch_sizes, layers)

    def fits_group(self, group: int, batch_sizes: tuple[int, ...], layers: int | None) -> bool:
        """Return whether a group's device holds training at ``batch_sizes``.

        ``layers``: only a split's device part; None: the whole model.
        """
        batch = max(batch_sizes, default=1)
        return self.devices[group].memory_bytes >= self.footprint(group, batch, layers)

    def work(self, task: DeviceTask, plan: Plan, jitter: float) -> OffloadWork | None:
        """Return what ``plan`` puts on the device, its links and the edge (None: local)."""
        if plan.kind == "local":
            return None
        edge, model = self.edges[task.edge_id], self.models[task.group]
        if plan.kind == "full":
            at_edge = task.device_id in self.data_at_edge
            data = 0 if at_edge else task.num_samples * self.sample_bytes
            return full_work(plan, model, edge, list(task.batch_sizes), data)
        device = self.devices[task.group]
        per_step = self.policies[task.group].batches_per_step
        return split_work(plan, model, device, edge, list(task.batch_sizes), jitter, per_step)

    def estimate(self, task: DeviceTask, plan: Plan, stay_online: bool) -> Estimate:
        """Estimate a plan as if alone.

        The device's own median rates times its lasting quality, no jitter, the edge's
        compute divided among the devices already offloaded to it this round.
        """
        device, link = self.devices[task.group], self.links[task.group]
        up_bps = link.up_mbps_median * task.quality * 1e6
        down_bps = link.down_mbps_median * task.quality * 1e6
        edge_bps = self.edges[task.edge_id].flops_per_s / (1 + self.edge_load.get(task.edge_id, 0))
        rtt = link.rtt_s
        bits = self.payload_bytes * BITS_PER_BYTE
        work = self.work(task, plan, 1.0)
        compute = rx = tx = idle = 0.0
        if work is None or plan.kind == "split":
            frac = 1.0 if work is None else work.model_fraction
            rx += rtt + frac * bits / down_bps
            tx += rtt + frac * bits / up_bps
        if work is None:
            model = self.models[task.group]
            fwd = model.forward_flops_per_sample
            compute = sum(device.step_s(model.name, fwd, b) for b in task.batch_sizes)
        elif plan.kind == "split":
            compute = work.device_compute_s
            for b in work.batches:
                tx += b.act_bits / up_bps
                rx += b.act_bits / down_bps
                idle += b.count * rtt + b.edge_flops / edge_bps
        else:
            if work.data_bits > 0:
                tx += rtt + work.data_bits / up_bps
            idle += work.edge_flops / edge_bps
        time_s = compute + rx + tx + idle
        if plan.kind == "full" and not stay_online:
            idle = 0.0
        energy = (
            compute * device.power_compute_w + rx * device.power_receive_w
            + tx * device.power_transmit_w + idle * device.power_idle_w
        )  # fmt: skip
        return Estimate(time_s, energy, self.fits(task, plan))

    def choose(self, task: DeviceTask) -> Choice:
        """Ask the device's policy, apply the memory rule, build the work."""
        group = self.policies[task.group]
        policy, stay_online = group.policy, group.stay_online
        if self.local_only and self.fits(task, LOCAL):
            return Choice(None, False, stay_online)
        cache: dict[Plan, Estimate] = {}

        def estimator(plan: Plan) -> Estimate:
            if plan not in cache:
                cache[plan] = self.estimate(task, plan, stay_online)
            return cache[plan]

        model = self.models[task.group]
        view = DeviceView(
            task.device_id, task.edge_id, task.round_index, self.devices[task.group],
            self.edges[task.edge_id], self.trusted[task.edge_id], self.links[task.group],
            task.quality, model, task.num_samples, task.batch_sizes, task.deadline_s,
            self.edge_load.get(task.edge_id, 0), task.device_id in self.data_at_edge,
            tuple(self.history.get(task.device_id, ())),
            partial(stream, self.scenario.seed, Purpose.OFFLOAD, task.device_id, task.round_index),
            estimator,
        )  # fmt: skip
        plan = policy.choose(view)
        self._check(plan, task, policy)
        if not self.fits(task, plan):  # the memory rule
            fitting = [p for p in view.candidates() if self.fits(task, p)]
            if not fitting:
                return Choice(None, True, stay_online)
            plan = view.fastest(fitting)
        if plan.kind != "local":
            self.edge_load[task.edge_id] = self.edge_load.get(task.edge_id, 0) + 1
        return Choice(self.work(task, plan, task.jitter), False, stay_online)

    def _check(self, plan: Plan, task: DeviceTask, policy: OffloadPolicy) -> None:
        name = type(policy).__name__
        if not isinstance(plan, Plan):
            raise InputError(f"offloading policy {name} returned {plan!r}, not a Plan")
        if plan.kind == "full" and not self.trusted[task.edge_id]:
            edge = self.scenario.topology.edges[task.edge_id].name
            raise InputError(
                f"offloading policy {name} chose 'full' for device {task.device_id} under "
                f"edge {edge!r}, which is not trusted: raw data never goes to an untrusted edge"
            )
        model = self.models[task.group]
        if plan.kind == "split" and not 0 < plan.k < len(model.layers):
            raise InputError(
                f"offloading policy {name} chose split({plan.k}); {model.name} has "
                f"{len(model.layers)} layers: k must be 1..{len(model.layers) - 1}"
            )

    def record(self, device_id: int, entry: HistoryEntry, data_uploaded: bool) -> None:
        """Note a device's finished round (history for policies; data now at the edge)."""
        if data_uploaded:
            self.data_at_edge.add(device_id)
        if self.keep_history:
            self.history.setdefault(device_id, deque(maxlen=HISTORY_ROUNDS)).append(entry)


def jitter_factor(seconds: float, base_s: float) -> float:
    """Return the device's jitter factor for a round from its jittered and plain seconds."""
    return seconds / base_s if base_s > 0 and math.isfinite(seconds) else 1.0
