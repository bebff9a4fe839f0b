"""The Python API: load a scenario, check it, run it, get the result tables."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.algorithms.base import Algorithm, algorithm_summary, build_algorithm
from fedsim.checks import check_offload, check_references, load_traces, memory_warnings
from fedsim.config import Scenario, load_scenario, scenario_to_dict
from fedsim.data import Dataset, DevicePartition, load_dataset, partition
from fedsim.errors import InputError
from fedsim.models import ModelInfo, build_model, describe, training_footprint_bytes
from fedsim.profiles import ProfileLibrary, load_profiles
from fedsim.results import check_out_dir, csv_text, default_out_dir, write_run_folder
from fedsim.runtime.base import LearningSetup, Runtime
from fedsim.runtime.training import resolve_vectorize
from fedsim.seeding import Purpose, stream
from fedsim.sim.offloading import GroupOffload, build_policies
from fedsim.sim.population import sample_counts
from fedsim.sim.simulation import (
    DEVICE_COLUMNS,
    ROUND_COLUMNS,
    UA_COLUMNS,
    Payloads,
    Simulation,
    SimulationInputs,
)
from fedsim.sim.traces import (
    AvailabilityTrace,
    BandwidthTrace,
)

__all__ = ["RunResult", "check", "load_scenario", "run"]

PACKAGES = ("fedsim", "torch", "numpy", "simpy", "pandas", "pydantic", "ray", "scikit-learn")


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder and its tables."""

    path: Path
    rounds: pd.DataFrame
    device_rounds: pd.DataFrame
    device_ua: pd.DataFrame
    summary: dict[str, Any]


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

    def warnings(self) -> list[str]:
        """Return one line per device group that cannot train locally (memory too small).

        Such devices are offloaded by the memory rule when a plan fits (a split's device
        part, or ``full`` under a trusted edge); otherwise they are ``oom`` and never train.
        """
        batch = max(self.algorithm.steps(len(self.dataset.y_train)), default=1)
        return memory_warnings(
            self.scenario, self.profiles, self.model, batch,
            self.algorithm.optimizer_values_per_param, self.footprint_bytes, self.source,
        )  # fmt: skip


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def check(
    scenario: Scenario, source: str = "scenario", profiles_dir: Path | None = None
) -> Prepared:
    """Resolve and check everything a scenario refers to, without running it.

    Raises
    ------
    InputError
        One line per problem: unknown profiles, models, algorithm params, data files.
    """
    profiles = load_profiles(profiles_dir)
    problems = check_references(scenario, profiles, source)
    try:
        algorithm = build_algorithm(scenario.algorithm, source)
    except InputError as exc:
        problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    data = scenario.data
    dataset = load_dataset(
        data.dataset, Path(data.dir) if data.dir else None, scenario.seed, **data.options
    )
    net = build_model(scenario.model, dataset.input_shape, dataset.num_classes)
    info = describe(net, scenario.model, dataset.input_shape)
    state = net.state_dict()
    # the same tensors go both ways: the model down, the update up (the algorithm decides)
    payload = sum(state[k].numel() * state[k].element_size() for k in algorithm.payload_keys(state))
    batch = max(algorithm.steps(len(dataset.y_train)), default=1)
    footprint = training_footprint_bytes(info, batch, algorithm.optimizer_values_per_param)
    policies = build_policies(scenario, source)
    check_offload(scenario, policies, info, source)
    bandwidth, availability = load_traces(scenario, source)
    sample_bytes = int(
        dataset.x_train.dtype.itemsize * int(np.prod(dataset.input_shape))
        + dataset.y_train.dtype.itemsize
    )
    return Prepared(
        scenario, source, profiles, algorithm, dataset, info, Payloads(payload, payload),
        footprint, bandwidth, availability, policies, sample_bytes,
    )  # fmt: skip


def _partitions(prep: Prepared) -> list[DevicePartition]:
    sc = prep.scenario
    p = sc.data.partition
    params: dict[str, Any] = {}
    if p.kind == "shards":
        params["shards_per_device"] = p.shards_per_device
    elif p.kind == "dirichlet":
        params["alpha"] = p.alpha
        if p.test_per_device is not None:
            params["test_per_device"] = p.test_per_device
    rng = stream(sc.seed, Purpose.PARTITION)
    return partition(prep.dataset, sc.topology.num_devices(), p.kind, rng, **params)


def make_runtime(prep: Prepared, parts: list[DevicePartition]) -> Runtime:
    """Build the scenario's runtime (inline or Ray)."""
    sc = prep.scenario
    setup = LearningSetup(
        seed=sc.seed,
        model_name=sc.model,
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


def _lock_step(prep: Prepared) -> bool:
    """Return whether the device hosts train in lock-step (``runtime.vectorize`` resolved)."""
    ds = prep.dataset
    net = build_model(prep.scenario.model, ds.input_shape, ds.num_classes)
    return resolve_vectorize(prep.scenario.runtime.vectorize, net)


def _used_profiles(sc: Scenario, profiles: ProfileLibrary) -> dict[str, Any]:
    names = {f"devices/{sc.topology.cloud.hardware}", f"networks/{sc.topology.cloud.backhaul}"}
    for edge in sc.topology.edges:
        names |= {f"devices/{edge.hardware}", f"networks/{edge.backhaul}"}
        for g in edge.devices:
            names |= {f"devices/{g.hardware}", f"networks/{g.link}"}
    return {n: profiles.raw[n] for n in sorted(names)}


def run(
    scenario: Scenario | str | Path,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    on_round: Callable[[dict[str, object]], None] | None = None,
    source: str | None = None,
    profiles_dir: Path | None = None,
) -> RunResult:
    """Run a scenario and write its run folder.

    Parameters
    ----------
    scenario : Scenario, str or Path
        A validated scenario, or the path of a scenario file.
    out_dir : str or Path, optional
        The run folder to create (default ``runs/<name>-<n>``); it must not exist.
    overrides : list of str, optional
        ``key.path=value`` items (only with a path).
    on_round : callable, optional
        Called with each round's row as it finishes (progress display).
    source : str, optional
        Where the scenario came from, for messages and run.json.
    profiles_dir : Path, optional
        Profiles folder (default: ``$FEDSIM_PROFILES`` or the bundled one).
    """
    wall0 = time.perf_counter()
    source = source or "scenario"
    if not isinstance(scenario, Scenario):
        source = str(scenario)
        scenario = load_scenario(scenario, overrides)
    out = Path(out_dir) if out_dir is not None else default_out_dir(scenario.name)
    check_out_dir(out)
    prep = check(scenario, source, profiles_dir)
    runtime: Runtime | None = None
    data = scenario.data
    if data.samples_per_device is not None:  # systems only: counts without a partition
        samples = sample_counts(
            scenario.topology.num_devices(), data.samples_per_device, data.samples_sigma,
            scenario.seed,
        )  # fmt: skip
    else:
        parts = _partitions(prep)
        samples = np.array([len(p.train_idx) for p in parts], dtype=np.int64)
        runtime = make_runtime(prep, parts) if scenario.learning else None
    # The driver needs no samples from here on: the runtime holds them (inline) or has
    # put them in Ray's object store; let the driver's own copy go.
    prep = dataclasses.replace(prep, dataset=prep.dataset.without_rows())
    setup_s = time.perf_counter() - wall0
    try:
        inputs = SimulationInputs(
            prep.profiles, prep.model, prep.algorithm, prep.payloads, samples,
            prep.footprint_bytes, prep.bandwidth, prep.availability_trace, prep.sample_bytes,
            prep.policies,
        )  # fmt: skip
        result = Simulation(scenario, inputs, runtime, on_round).run()
    finally:
        if runtime is not None:
            runtime.close()
    files = {
        "rounds.csv": csv_text(ROUND_COLUMNS, result.rounds),
        "device_rounds.csv": csv_text(DEVICE_COLUMNS, result.device_rounds),
        "device_ua.csv": csv_text(UA_COLUMNS, result.device_ua),
    }
    rounds = pd.DataFrame(result.rounds, columns=list(ROUND_COLUMNS))
    last = rounds.iloc[-1]
    evaluated = rounds["accuracy"].dropna()
    summary = {
        "rounds": len(rounds),
        "versions": int(last["version"]),
        "virtual_time_s": float(last["virtual_time_s"]),
        "final_accuracy": float(evaluated.iloc[-1]) if len(evaluated) else None,
        "best_accuracy": float(evaluated.max()) if len(evaluated) else None,
        "bytes_up": int(rounds["bytes_up"].sum()),
        "bytes_down": int(rounds["bytes_down"].sum()),
        "energy_j": float(rounds["energy_j"].sum()),
        "stragglers": int(rounds["stragglers"].sum()),
        "dropped": int(rounds["dropped"].sum()),
        "stopped_by": result.stopped_by,
    }
    meta = {
        "fedsim_version": _package_versions()["fedsim"],
        "seed": scenario.seed,
        "scenario_file": source,
        "scenario": scenario_to_dict(scenario),
        "profiles": _used_profiles(scenario, prep.profiles),
        "model": {
            "name": prep.model.name,
            "num_params": prep.model.num_params,
            "param_bytes": prep.model.param_bytes,
            "forward_flops_per_sample": prep.model.forward_flops_per_sample,
            "download_bytes": prep.payloads.download_bytes,
            "upload_bytes": prep.payloads.upload_bytes,
            "training_footprint_bytes": prep.footprint_bytes,
        },
        "algorithm": algorithm_summary(prep.algorithm),
        "lock_step_training": _lock_step(prep) if scenario.learning else None,
        "packages": _package_versions(),
        "summary": summary,
    }
    timings = {
        "setup_s": setup_s,
        "wall_s_total": time.perf_counter() - wall0,
        "wall_s_per_round": result.wall_s_per_round,
        "torch_threads": scenario.runtime.torch_threads,
        "host": platform.node(),
    }
    files["timings.json"] = json.dumps(timings, indent=2) + "\n"
    path = write_run_folder(out, files, meta)
    return RunResult(
        path,
        rounds,
        pd.DataFrame(result.device_rounds, columns=list(DEVICE_COLUMNS)),
        pd.DataFrame(result.device_ua, columns=list(UA_COLUMNS)),
        summary,
    )
