"""Preparing a run: the scenario checked, its data, model, partition and runtime built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.algorithms.base import Algorithm, build_algorithm
from fedsim.checks import (
    async_warnings,
    check_offload,
    check_references,
    check_runtime,
    check_workload,
    deadline_warnings,
    load_traces,
    memory_warnings,
)
from fedsim.config import AsyncRoundsSpec, Scenario
from fedsim.data import Dataset, DevicePartition, load_dataset, partition
from fedsim.data.noise import add_noise, noisy_devices
from fedsim.data.sharing import partition_with_sharing
from fedsim.errors import InputError, naming
from fedsim.models import ModelInfo, build_model, describe, training_footprint_bytes
from fedsim.profiles import ProfileLibrary, load_profiles
from fedsim.runtime.base import LearningSetup, Runtime
from fedsim.runtime.lock_step import resolve_vectorize
from fedsim.seeding import Purpose, stream
from fedsim.sim.async_selection import build_selection
from fedsim.sim.offloading import GroupOffload, build_policies
from fedsim.sim.population import sample_counts
from fedsim.sim.simulation import Payloads
from fedsim.sim.traces import (
    AvailabilityTrace,
    BandwidthTrace,
)


@dataclass(frozen=True)
class Prepared:
    """A scenario with everything it refers to resolved and checked."""

    scenario: Scenario
    source: str
    profiles: ProfileLibrary
    algorithm: Algorithm
    dataset: Dataset
    model: ModelInfo
    payloads: Payloads
    footprint_bytes: int
    bandwidth: BandwidthTrace | None = None
    availability_trace: AvailabilityTrace | None = None
    policies: list[GroupOffload] | None = None
    sample_bytes: int = 0
    partitions: tuple[DevicePartition, ...] | None = None
    group_models: tuple[ModelInfo, ...] = ()

    def warnings(self) -> list[str]:
        """Return one line per device group that cannot train locally (memory too small).

        Such devices are offloaded by the memory rule when a plan fits (a split's device
        part, or ``full`` under a trusted edge); otherwise they are ``oom`` and never train.
        A last line warns when ``rounds.deadline_s`` is too short for any round to complete.
        """
        batch = self.algorithm.largest_batch(len(self.dataset.y_train))
        return memory_warnings(
            self.scenario, self.profiles, self.group_models or (self.model,), batch,
            self.algorithm.optimizer_values_per_param, self.source,
        ) + deadline_warnings(self.scenario, self.profiles, self.source) + async_warnings(
            self.scenario, self.source
        )  # fmt: skip


def check(
    scenario: Scenario, source: str = "scenario", profiles_dir: Path | None = None
) -> Prepared:
    """Resolve and check everything a scenario refers to, without running it.

    Everything ``run`` can reject before its first round is rejected here: the data are
    loaded and partitioned (a partition that cannot give every device data fails here),
    and the busiest device's local steps are counted.

    Raises
    ------
    InputError
        One line per problem, naming the scenario file: unknown profiles, models,
        algorithm params, data files, an infeasible partition.
    """
    profiles = load_profiles(profiles_dir)
    problems = check_references(scenario, profiles, source) + check_runtime(scenario, source)
    try:
        algorithm = build_algorithm(scenario.algorithm, source)
    except InputError as exc:
        problems.extend(exc.problems)
    else:
        problems += check_group_models(scenario, algorithm, source)
        problems += algorithm.scenario_problems(scenario, source)
    if isinstance(scenario.rounds, AsyncRoundsSpec):
        try:
            build_selection(scenario.rounds.selection, source)
        except InputError as exc:
            problems.extend(exc.problems)
        if not problems and algorithm.server_optimizer:
            problems.append(
                f"{source}: algorithm.use: {scenario.algorithm.use!r} steps an optimiser at "
                "the cloud's synchronous syncs; an asynchronous run applies rounds.server's "
                "rule instead (use an algorithm whose cloud takes the plain mean: fedavg, "
                "or pfedme with beta 1)"
            )
    if problems:
        raise InputError(problems)
    data = scenario.data
    try:
        dataset = load_dataset(
            data.dataset, Path(data.dir) if data.dir else None, scenario.seed, **data.options
        )
        net = build_model(scenario.model, dataset.input_shape, dataset.num_classes)
        infos = {
            name: describe(build_model(name, dataset.input_shape, dataset.num_classes), name,
                           dataset.input_shape)
            for name in sorted(set(group_model_names(scenario)) - {scenario.model})
        }  # fmt: skip
        try:
            algorithm.bind(net)  # which values stay on devices: not in the payload
        except ValueError as exc:  # a parameter naming what the model lacks, or the model
            text = str(exc)
            raise InputError(
                text if text.startswith("model:") else f"algorithm.params.{text}"
            ) from None
        parts = None if data.samples_per_device is not None else _split(scenario, dataset)
    except InputError as exc:
        raise naming(source, exc) from None
    rt = scenario.runtime
    if algorithm.private and rt.kind == "ray" and rt.on_failure == "recover":
        raise InputError(
            f"{source}: runtime.on_failure: recover cannot give back the private values a "
            "dead device host held (algorithm.params.private); use fail, and fedsim resume"
        )
    check_workload(scenario, algorithm, _train_counts(scenario, parts), source)
    info = describe(net, scenario.model, dataset.input_shape)
    infos[scenario.model] = info
    group_models = tuple(infos[name] for name in group_model_names(scenario))
    state = algorithm.initial_state(net)  # the model and what travels with it
    down, up, values = algorithm.transfer_sizes(state)  # the algorithm decides
    batch = algorithm.largest_batch(len(dataset.y_train))
    footprint = training_footprint_bytes(info, batch, algorithm.optimizer_values_per_param)
    policies = build_policies(scenario, source)
    check_offload(scenario, policies, group_models, source)
    bandwidth, availability = load_traces(scenario, source)
    sample_bytes = int(
        dataset.x_train.dtype.itemsize * int(np.prod(dataset.input_shape))
        + dataset.y_train.dtype.itemsize
    )
    return Prepared(
        scenario, source, profiles, algorithm, dataset, info, Payloads(down, up, values),
        footprint, bandwidth, availability, policies, sample_bytes,
        None if parts is None else tuple(parts), group_models,
    )  # fmt: skip


def group_model_names(scenario: Scenario) -> list[str]:
    """Return the model each device group trains (its ``model``, else the scenario's)."""
    return [g.model or scenario.model for e in scenario.topology.edges for g in e.devices]


def check_group_models(scenario: Scenario, algorithm: Algorithm, source: str) -> list[str]:
    """Return one line per device group whose ``model`` the algorithm cannot train.

    Only an algorithm whose devices keep their whole model (``keeps_model``: fd) trains
    other architectures than the scenario's: the others average one model.
    """
    if algorithm.keeps_model:
        return []
    return [
        f"{source}: topology.edges[{i}].devices[{j}].model: {g.model!r} differs from the "
        f"scenario's model {scenario.model!r}; only an algorithm whose devices keep their "
        "whole model (fd) trains several architectures in one run"
        for i, e in enumerate(scenario.topology.edges)
        for j, g in enumerate(e.devices)
        if g.model is not None and g.model != scenario.model
    ]


def _split(sc: Scenario, dataset: Dataset) -> list[DevicePartition]:
    """Partition the dataset over the scenario's devices."""
    p = sc.data.partition
    params: dict[str, Any] = {}
    if p.kind == "shards":
        params["shards_per_device"] = p.shards_per_device
    elif p.kind == "dirichlet":
        params["alpha"] = p.alpha
        if p.test_per_device is not None:
            params["test_per_device"] = p.test_per_device
    elif p.kind == "natural":
        for key in ("train_per_device", "test_per_device", "balanced_test"):
            if getattr(p, key):  # unset: no draw, the whole of every user's rows
                params[key] = getattr(p, key)

    def split(ds: Dataset) -> list[DevicePartition]:
        rng = stream(sc.seed, Purpose.PARTITION)
        return partition(ds, sc.topology.num_devices(), p.kind, rng, **params)

    share = sc.data.sharing
    if share is None:
        return split(dataset)
    return partition_with_sharing(
        dataset, split, share.global_size, share.per_device, sc.seed, share.train
    )


def _train_counts(sc: Scenario, parts: list[DevicePartition] | None) -> np.ndarray:
    """Return every device's training samples: its partition's, or the systems-only draw."""
    data = sc.data
    if parts is not None:
        return np.array([len(p.train_idx) for p in parts], dtype=np.int64)
    assert data.samples_per_device is not None  # no partition: systems-only counts
    return sample_counts(
        sc.topology.num_devices(), data.samples_per_device, data.samples_sigma, sc.seed
    )


def device_partitions(prep: Prepared) -> list[DevicePartition]:
    """Return the partition :func:`check` made (or make it, for a hand-built ``Prepared``)."""
    if prep.partitions is not None:
        return list(prep.partitions)
    return _split(prep.scenario, prep.dataset)


def device_data(prep: Prepared) -> tuple[Dataset, list[DevicePartition], frozenset[int]]:
    """Return the data the devices train and test on: dataset, partitions, noisy devices.

    The partition of :func:`device_partitions`; with ``data.noise``, the noisy devices' own
    noisy copies of their rows appended to the dataset, their partitions pointing at them
    (:mod:`fedsim.data.noise`). Systems-only scenarios (``data.samples_per_device``) have
    no partition: do not call it for them.
    """
    sc = prep.scenario
    parts = device_partitions(prep)
    noise = sc.data.noise
    if noise is None:
        return prep.dataset, parts, frozenset()
    ids = noisy_devices(sc.seed, len(parts), noise.fraction)
    dataset, parts = add_noise(prep.dataset, parts, ids, noise.std, sc.seed)
    return dataset, parts, frozenset(ids.tolist())


def make_runtime(prep: Prepared, parts: list[DevicePartition]) -> Runtime:
    """Build the scenario's runtime (inline or Ray)."""
    sc = prep.scenario
    setup = LearningSetup(
        seed=sc.seed,
        model_name=sc.model,
        device_models=_device_models(sc),
        dataset=prep.dataset,
        partitions=tuple(parts),
        algorithm=sc.algorithm,
        num_edges=len(sc.topology.edges),
        torch_threads=sc.runtime.torch_threads,
        vectorize=sc.runtime.vectorize,
    )
    if sc.runtime.kind == "ray":
        from fedsim.runtime.ray_runtime import RayRuntime

        return RayRuntime(setup, sc.runtime)
    from fedsim.runtime.inline import InlineRuntime

    return InlineRuntime(setup)


def lock_step(prep: Prepared) -> bool:
    """Return whether the device hosts train in lock-step (``runtime.vectorize`` resolved)."""
    ds = prep.dataset
    net = build_model(prep.scenario.model, ds.input_shape, ds.num_classes)
    return resolve_vectorize(prep.scenario.runtime.vectorize, net)


def _device_models(sc: Scenario) -> dict[int, str]:
    """Return the devices that train another model than the scenario's, by device id."""
    out: dict[int, str] = {}
    first = 0  # devices are numbered edge by edge, group by group
    for e in sc.topology.edges:
        for g in e.devices:
            if g.model is not None and g.model != sc.model:
                out.update(dict.fromkeys(range(first, first + g.count), g.model))
            first += g.count
    return out


def model_meta(prep: Prepared) -> dict[str, Any]:
    """Return run.json's ``model`` entry: size, cost and payloads of the scenario's model.

    When device groups train other architectures (fd), ``architectures`` gives each one's
    size and cost and how many devices train it.
    """
    meta: dict[str, Any] = {
        "name": prep.model.name,
        "num_params": prep.model.num_params,
        "param_bytes": prep.model.param_bytes,
        "forward_flops_per_sample": prep.model.forward_flops_per_sample,
        "download_bytes": prep.payloads.download_bytes,
        "upload_bytes": prep.payloads.upload_bytes,
        "training_footprint_bytes": prep.footprint_bytes,
    }
    names = {m.name for m in prep.group_models}
    if names - {prep.model.name}:
        groups = [g.count for e in prep.scenario.topology.edges for g in e.devices]
        meta["architectures"] = {
            name: {
                "devices": sum(c for c, m in zip(groups, prep.group_models, strict=True)
                               if m.name == name),
                "num_params": info.num_params,
                "forward_flops_per_sample": info.forward_flops_per_sample,
            }
            for name, info in sorted({m.name: m for m in prep.group_models}.items())
        }  # fmt: skip
    return meta
