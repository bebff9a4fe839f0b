"""The Python API: load a scenario, check it, run it, get the result tables."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim import checkpoint
from fedsim.algorithms.base import algorithm_summary
from fedsim.checkpoint import Checkpoint
from fedsim.config import Scenario, load_scenario, scenario_from_dict
from fedsim.data.sharing import SharingRecord, sharing_record
from fedsim.errors import InputError, naming
from fedsim.execution import (
    execute,
    finish,
    host_timings,
    meta_without_summary,
    read_partial,
    tables,
    used_profiles,
)
from fedsim.prepare import (
    Prepared,
    check,
    device_data,
    lock_step,
    make_runtime,
    model_meta,
)
from fedsim.results import PARTIAL, RunFolder, check_out_dir, default_out_dir, read_table
from fedsim.runtime.base import Runtime
from fedsim.sim.personalisation import personalisation_stage
from fedsim.sim.population import Population, sample_counts
from fedsim.sim.simulation import SimulationInputs

__all__ = ["RunResult", "check", "load_scenario", "resume", "run"]


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder, its summary, and its tables (read when first asked for)."""

    path: Path
    summary: dict[str, Any]

    @cached_property
    def rounds(self) -> pd.DataFrame:
        """Return ``rounds.csv``."""
        return read_table(self.path / "rounds.csv")

    @cached_property
    def device_rounds(self) -> pd.DataFrame:
        """Return ``device_rounds.csv``."""
        return read_table(self.path / "device_rounds.csv")

    @cached_property
    def device_ua(self) -> pd.DataFrame:
        """Return ``device_ua.csv``."""
        return read_table(self.path / "device_ua.csv")

    @cached_property
    def updates(self) -> pd.DataFrame:
        """Return ``updates.csv`` (asynchronous runs only)."""
        return read_table(self.path / "updates.csv")


def run(
    scenario: Scenario | str | Path,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    on_round: Callable[[dict[str, object]], None] | None = None,
    source: str | None = None,
    profiles_dir: Path | None = None,
    on_warning: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Run a scenario and write its run folder.

    Rows reach the folder as each round finishes; the folder holds ``run.json`` once the
    run is complete (``run.partial.json`` before). An interrupted run keeps its finished
    rounds and its last checkpoint: :func:`resume` continues it.

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
    on_warning : callable, optional
        Called, before the first round, with each line ``fedsim validate`` warns about.
    stop : callable, optional
        Asked after every round; True stops the run there, after a checkpoint, by raising
        ``KeyboardInterrupt`` (the command line's first Ctrl-C or SIGTERM).

    Raises
    ------
    InputError
        Bad input, found before the first round (the scenario, its profiles and data, an
        output folder that exists or cannot be made), or during it (a custom component's
        bad answer); each line names the scenario file.
    """
    wall0 = time.perf_counter()
    source = source or "scenario"
    if not isinstance(scenario, Scenario):
        source = str(scenario)
        scenario = load_scenario(scenario, overrides)
    out = Path(out_dir) if out_dir is not None else default_out_dir(scenario.name)
    check_out_dir(out)
    prep = check(scenario, source, profiles_dir)
    if on_warning is not None:
        for line in prep.warnings():
            on_warning(line)
    try:
        # a resume from another folder still finds the traces relative to the scenario file
        where = {"scenario_path": str(Path(source).resolve())} if Path(source).is_file() else {}
        create = lambda meta: RunFolder.create(out, tables(scenario), meta, where)  # noqa: E731
        return _drive(prep, wall0, create, on_round, stop=stop)
    except InputError as exc:
        raise naming(source, exc) from None


def resume(
    run_dir: str | Path,
    on_round: Callable[[dict[str, object]], None] | None = None,
    profiles_dir: Path | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (or its start, if none).

    The finished files equal those of an uninterrupted run, byte for byte.

    Raises
    ------
    InputError
        Not an unfinished run folder; a damaged checkpoint; profiles that changed since.
    """
    wall0 = time.perf_counter()
    path = Path(run_dir)
    partial = read_partial(path)
    source = str(partial.get("scenario_file", "scenario"))
    scenario = scenario_from_dict(partial["scenario"], f"{path / PARTIAL}: scenario")
    located = (partial.get("resume") or {}).get("scenario_path", source)
    # traces resolve against the scenario file where it was; run.json keeps its name as given
    prep = dataclasses.replace(check(scenario, str(located), profiles_dir), source=source)
    if used_profiles(scenario, prep.profiles) != partial.get("profiles"):
        raise InputError(
            f"{path / PARTIAL}: profiles: the hardware or link profiles the run used have "
            "changed since it started; resume with the same profiles (--profiles-dir)"
        )
    start = checkpoint.load(path)
    sizes = start[0].table_bytes if start is not None else None
    reopen = lambda _: RunFolder.reopen(path, tables(scenario), sizes)  # noqa: E731
    return _drive(prep, wall0, reopen, on_round, start, stop)


def _drive(
    prep: Prepared,
    wall0: float,
    open_folder: Callable[[dict[str, Any]], RunFolder],
    on_round: Callable[[dict[str, object]], None] | None,
    start: tuple[Checkpoint, dict[str, Any]] | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Build the runtime, open the run folder, run (or continue), write the final files."""
    scenario = prep.scenario
    runtime: Runtime | None = None
    data = scenario.data
    noisy: frozenset[int] = frozenset()
    shared: SharingRecord | None = None
    if data.samples_per_device is not None:  # systems only: counts without a partition
        samples = sample_counts(
            scenario.topology.num_devices(), data.samples_per_device, data.samples_sigma,
            scenario.seed,
        )  # fmt: skip
    else:
        # noisy clients (data.noise): their own noisy copies of their rows
        dataset, parts, noisy = device_data(prep)
        prep = dataclasses.replace(prep, dataset=dataset)
        samples = np.array([len(p.train_idx) for p in parts], dtype=np.int64)
        shared = sharing_record(parts, prep.sample_bytes)
        runtime = make_runtime(prep, parts) if scenario.learning else None
    meta = meta_without_summary(
        scenario, prep.source, used_profiles(scenario, prep.profiles), model_meta(prep),
        algorithm_summary(prep.algorithm), lock_step(prep) if scenario.learning else None,
    )  # fmt: skip
    # The driver needs no samples from here on: the runtime holds them (inline) or has
    # put them in Ray's object store; let the driver's own copy go.
    prep = dataclasses.replace(prep, dataset=prep.dataset.without_rows())
    setup_s = time.perf_counter() - wall0
    try:
        folder = open_folder(meta)
        inputs = SimulationInputs(
            prep.profiles, prep.model, prep.algorithm, prep.payloads, samples,
            prep.footprint_bytes, prep.bandwidth, prep.availability_trace, prep.sample_bytes,
            prep.policies, noisy, prep.group_models,
        )  # fmt: skip
        try:
            result, totals = execute(scenario, inputs, runtime, folder, on_round, start, stop)
            busy = runtime.busy_intervals() if runtime is not None else []
        finally:
            folder.close()
    finally:
        if runtime is not None:
            runtime.close()
    timings = host_timings(setup_s, wall0, scenario)
    # real failures (a dead Ray worker that was recovered), apart from simulated drop-outs
    timings["runtime_failures"] = list(runtime.failures) if runtime is not None else []
    if busy:  # asynchronous runs on Ray: when each device host trained (wall clock)
        timings["host_busy_s"] = busy
    stage = personalisation_stage(
        prep.algorithm, Population.from_topology(scenario.topology), prep.profiles, prep.model,
        samples,
    )  # fmt: skip
    records = [r for r in (stage, shared) if r is not None]
    summary = finish(folder, meta, totals, result, timings, records)
    return RunResult(folder.path, summary)
