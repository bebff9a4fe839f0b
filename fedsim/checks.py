"""Cross-checks of a scenario: profile and model names, offloading rules, traces, memory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fedsim.config import Scenario
from fedsim.errors import InputError
from fedsim.models import MODEL_NAMES, ModelInfo, training_footprint_bytes
from fedsim.offload.full import Full
from fedsim.offload.split import Split
from fedsim.profiles import ProfileLibrary
from fedsim.sim.population import Population
from fedsim.sim.traces import (
    AvailabilityTrace,
    BandwidthTrace,
    load_availability_trace,
    load_bandwidth_trace,
)

if TYPE_CHECKING:
    from fedsim.sim.offloading import GroupOffload


def check_references(scenario: Scenario, profiles: ProfileLibrary, source: str) -> list[str]:
    """Return one problem line per profile or model name that does not exist."""
    problems = []
    topo = scenario.topology

    def need(kind: str, name: str, field: str, tiers: tuple[str, ...] = ()) -> None:
        table = profiles.devices if kind == "device" else profiles.links
        if name not in table:
            known = ", ".join(sorted(table))
            problems.append(f"{source}: {field}: unknown {kind} profile {name!r}; known: {known}")
        elif tiers and profiles.devices[name].tier not in tiers:
            tier = profiles.devices[name].tier
            problems.append(
                f"{source}: {field}: {name!r} is a {tier} profile, not {'/'.join(tiers)}"
            )

    need("device", topo.cloud.hardware, "topology.cloud.hardware", ("cloud", "edge"))
    need("link", topo.cloud.backhaul, "topology.cloud.backhaul")
    for i, edge in enumerate(topo.edges):
        need("device", edge.hardware, f"topology.edges[{i}].hardware", ("edge", "cloud"))
        need("link", edge.backhaul, f"topology.edges[{i}].backhaul")
        for j, group in enumerate(edge.devices):
            need("device", group.hardware, f"topology.edges[{i}].devices[{j}].hardware")
            need("link", group.link, f"topology.edges[{i}].devices[{j}].link")
    if scenario.model not in MODEL_NAMES:
        problems.append(
            f"{source}: model: unknown model {scenario.model!r}; known: {', '.join(MODEL_NAMES)}"
        )
    return problems


def check_offload(
    scenario: Scenario, policies: list[GroupOffload], info: ModelInfo, source: str
) -> None:
    """Reject what a fixed policy could never do.

    ``full`` under an untrusted edge; a split point outside the model.
    """
    problems = []
    groups = [(i, j, e, g) for i, e in enumerate(scenario.topology.edges) for j, g in
              enumerate(e.devices)]  # fmt: skip
    for (i, j, edge, group), rule in zip(groups, policies, strict=True):
        policy = rule.policy
        field = f"topology.edges[{i}].devices[{j}].offload" if group.offload else "offload"
        if isinstance(policy, Full) and not edge.trusted:
            problems.append(
                f"{source}: {field}.use: 'full' sends raw training data to the edge, and edge "
                f"{edge.name!r} is not trusted (set topology.edges[{i}].trusted: true)"
            )
        if isinstance(policy, Split) and not policy.params.k < len(info.layers):
            problems.append(
                f"{source}: {field}.params.k: expected 1..{len(info.layers) - 1} (the model "
                f"{info.name} has {len(info.layers)} layers), got {policy.params.k}"
            )
    if problems:
        raise InputError(sorted(set(problems), key=problems.index))


def load_traces(
    scenario: Scenario, source: str
) -> tuple[BandwidthTrace | None, AvailabilityTrace | None]:
    """Load the scenario's traces (paths relative to the scenario file's folder)."""
    traces = scenario.traces
    if traces.bandwidth is None and traces.availability is None:
        return None, None
    folder = Path(source).parent if Path(source).is_file() else Path.cwd()
    population = Population.from_topology(scenario.topology)
    problems: list[str] = []
    bandwidth = availability = None
    try:
        if traces.bandwidth is not None:
            bandwidth = load_bandwidth_trace(folder / traces.bandwidth, population)
    except InputError as exc:
        problems.extend(exc.problems)
    try:
        if traces.availability is not None:
            availability = load_availability_trace(folder / traces.availability, population)
    except InputError as exc:
        problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    return bandwidth, availability


def memory_warnings(
    scenario: Scenario, profiles: ProfileLibrary, model: ModelInfo, batch: int,
    optimizer_values_per_param: int, footprint_bytes: int, source: str,
) -> list[str]:  # fmt: skip
    """Return one line per device group whose memory cannot hold local training.

    Each says what the memory rule does with it: offloads it (the plan that fits) or leaves
    it ``oom``.
    """
    out = []
    for i, edge in enumerate(scenario.topology.edges):
        for j, group in enumerate(edge.devices):
            memory = profiles.device(group.hardware).memory_bytes
            if memory >= footprint_bytes:
                continue
            where = f"{source}: topology.edges[{i}].devices[{j}]: {group.hardware}"
            needs = (
                f"has {memory:,} bytes of memory, training {model.name} needs {footprint_bytes:,}"
            )
            splits = [
                k for k in range(1, len(model.layers))
                if training_footprint_bytes(model, batch, optimizer_values_per_param, k) <= memory
            ]  # fmt: skip
            if edge.trusted or splits:
                plan = "full" if edge.trusted else f"split(k <= {max(splits)})"
                out.append(f"{where} {needs}: the memory rule offloads it ({plan})")
            else:
                out.append(f"{where} {needs}: these devices will be 'oom' and never train")
    return out
