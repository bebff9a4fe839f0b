"""Cross-checks of a scenario: profile and model names, offloading rules, traces, memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedsim.algorithms import BUILTIN_ALGORITHMS
from fedsim.algorithms.base import Algorithm
from fedsim.config import AsyncRoundsSpec, Scenario
from fedsim.errors import InputError
from fedsim.models import MODEL_NAMES, ModelInfo, training_footprint_bytes
from fedsim.offload import BUILTIN_POLICIES
from fedsim.offload.full import Full
from fedsim.offload.split import Split
from fedsim.profiles import ProfileLibrary
from fedsim.registry import module_to_import
from fedsim.sim.async_selection import BUILTIN_SELECTIONS
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
            if group.model is not None and group.model not in MODEL_NAMES:
                problems.append(
                    f"{source}: topology.edges[{i}].devices[{j}].model: unknown model "
                    f"{group.model!r}; known: {', '.join(MODEL_NAMES)}"
                )
    if scenario.model not in MODEL_NAMES:
        problems.append(
            f"{source}: model: unknown model {scenario.model!r}; known: {', '.join(MODEL_NAMES)}"
        )
    return problems


def check_offload(
    scenario: Scenario, policies: list[GroupOffload], models: Sequence[ModelInfo], source: str
) -> None:
    """Reject what a fixed policy could never do.

    ``full`` under an untrusted edge; a split point outside the model (``models``: per
    device group, the model its devices train).
    """
    problems = []
    groups = [(i, j, e, g) for i, e in enumerate(scenario.topology.edges) for j, g in
              enumerate(e.devices)]  # fmt: skip
    for (i, j, edge, group), rule, info in zip(groups, policies, models, strict=True):
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


#: Local SGD steps one device may take in one round (``fedsim validate`` refuses more).
MAX_STEPS_PER_ROUND = 10**6


def check_workload(
    scenario: Scenario, algorithm: Algorithm, samples: np.ndarray, source: str
) -> None:
    """Reject a round whose busiest device would take more than 10**6 local steps.

    Parameters
    ----------
    scenario : Scenario
        The scenario (for the message).
    algorithm : Algorithm
        The resolved algorithm (it counts the steps).
    samples : np.ndarray
        Training samples of every device.
    source : str
        The scenario file, for the message.
    """
    most = int(samples.max()) if len(samples) else 0
    steps = algorithm.num_steps(most)
    if steps <= MAX_STEPS_PER_ROUND:
        return
    data = scenario.data
    fewer = "fewer algorithm.params.local_epochs or a larger batch_size"
    if data.samples_per_device is not None:
        fewer += ", or a smaller data.samples_per_device or data.samples_sigma"
    raise InputError(
        f"{source}: algorithm.params: the busiest device ({most:,} training samples) would "
        f"take {steps:,} local steps a round; at most {MAX_STEPS_PER_ROUND:,} ({fewer})"
    )


def deadline_warnings(scenario: Scenario, profiles: ProfileLibrary, source: str) -> list[str]:
    """Warn when ``rounds.deadline_s`` is shorter than any device's round can be.

    Every update needs a download and an upload, each at least one round trip of the
    device's access link, so no device can report before twice the shortest RTT: with a
    shorter deadline no round completes and the model never changes.
    """
    deadline = scenario.rounds.deadline_s
    if deadline is None:
        return []
    links = {g.link for e in scenario.topology.edges for g in e.devices}
    rtt_s, link = min((profiles.link(name).rtt_s, name) for name in links)
    if deadline >= 2 * rtt_s:
        return []
    return [
        f"{source}: rounds.deadline_s: {deadline:g} s is shorter than any device's round "
        f"(at least a download and an upload, one round trip each: {2 * rtt_s:g} s on link "
        f"{link!r}, the fastest); no device can report, so no round will complete"
    ]


def async_warnings(scenario: Scenario, source: str) -> list[str]:
    """Warn where an asynchronous run ignores a setting that synchronous runs use.

    ``runtime.on_failure: recover`` re-runs a dead device host's lost round; asynchronous
    runs on Ray stop on a dead actor instead, and ``fedsim resume`` continues them from the
    last checkpoint (docs/async.md).
    """
    if not isinstance(scenario.rounds, AsyncRoundsSpec):
        return []
    if scenario.runtime.kind == "ray" and scenario.runtime.on_failure == "recover":
        return [
            f"{source}: runtime.on_failure: recover applies to synchronous rounds; this "
            "asynchronous run stops if a Ray worker dies (continue it with fedsim resume)"
        ]
    return []


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
    scenario: Scenario, profiles: ProfileLibrary, models: Sequence[ModelInfo], batch: int,
    optimizer_values_per_param: int, source: str,
) -> list[str]:  # fmt: skip
    """Return one line per device group whose memory cannot hold local training.

    Each says what the memory rule does with it: offloads it (the plan that fits) or leaves
    it ``oom``. ``models``: per device group, the model its devices train (one: all).
    """
    out = []
    groups = [(i, j, e, g) for i, e in enumerate(scenario.topology.edges) for j, g in
              enumerate(e.devices)]  # fmt: skip
    for n, (i, j, edge, group) in enumerate(groups):
        model = models[n if len(models) > 1 else 0]
        footprint_bytes = training_footprint_bytes(model, batch, optimizer_values_per_param)
        memory = profiles.device(group.hardware).memory_bytes
        if memory >= footprint_bytes:
            continue
        where = f"{source}: topology.edges[{i}].devices[{j}]: {group.hardware}"
        needs = f"has {memory:,} bytes of memory, training {model.name} needs {footprint_bytes:,}"
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


def check_runtime(scenario: Scenario, source: str) -> list[str]:
    """Return one problem line if the runtime asks for what this installation lacks.

    ``runtime.dashboard: true`` on a local Ray needs Ray's dashboard packages
    (``ray[default]``); ``ray`` alone has not got them and Ray would stop with a traceback.
    """
    rt = scenario.runtime
    if rt.kind != "ray" or not rt.dashboard or rt.address:
        return []
    from fedsim.runtime.ray_setup import dashboard_missing

    missing = dashboard_missing()
    if missing is None:
        return []
    return [
        f"{source}: runtime.dashboard: Ray's dashboard needs packages that are not installed "
        f"({missing}); install them with pip install 'ray[default]', or set "
        "runtime.dashboard: false"
    ]


def scenario_imports(scenario: Scenario) -> dict[str, list[str]]:
    """Return each module a scenario names as ``package.module:Class``, with its fields.

    These modules' code runs when the scenario is validated or run: ``algorithm.use`` in
    the driver and in every Ray actor, ``offload.use`` in the driver. Built-in names are
    left out. An offloading spec counts only where a device group uses it.
    """
    named = [("algorithm.use", scenario.algorithm.use, BUILTIN_ALGORITHMS)]
    if isinstance(scenario.rounds, AsyncRoundsSpec):
        named.append(("rounds.selection", scenario.rounds.selection, BUILTIN_SELECTIONS))
    for i, edge in enumerate(scenario.topology.edges):
        for j, group in enumerate(edge.devices):
            field = f"topology.edges[{i}].devices[{j}].offload" if group.offload else "offload"
            spec = group.offload or scenario.offload
            named.append((f"{field}.use", spec.use, BUILTIN_POLICIES))
    out: dict[str, list[str]] = {}
    for field, name, builtins in named:
        module = module_to_import(name, builtins)
        if module is not None and field not in out.get(module, []):
            out.setdefault(module, []).append(field)
    return out
