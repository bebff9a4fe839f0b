"""Driving a prepared run: rows streamed to the run folder, checkpoints, the final files.

``fedsim.api`` prepares (checks the scenario, builds the runtime); this module runs the
simulation into a :class:`~fedsim.results.RunFolder`, fresh or from a checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fedsim import checkpoint
from fedsim.checkpoint import Checkpoint, LoopState
from fedsim.config import AsyncRoundsSpec, Scenario, scenario_to_dict
from fedsim.errors import InputError
from fedsim.profiles import ProfileLibrary
from fedsim.results import FINAL, PARTIAL, RunFolder, Totals
from fedsim.runtime.base import Runtime
from fedsim.sim.rows import DEVICE_COLUMNS, ROUND_COLUMNS, UA_COLUMNS, UPDATE_COLUMNS
from fedsim.sim.simulation import Simulation, SimulationInputs, SimulationResult

PACKAGES = ("fedsim", "torch", "numpy", "simpy", "pandas", "pydantic", "ray", "scikit-learn")


class RunRecord(Protocol):
    """Something a finished run folder keeps beside its tables (files, summary entries)."""

    def files(self) -> dict[str, str]:
        """Return file name -> text."""
        ...

    def summary(self, virtual_time_s: float) -> dict[str, Any]:
        """Return entries of run.json's summary, given the run's virtual seconds."""
        ...


TABLES: dict[str, Sequence[str]] = {
    "rounds.csv": ROUND_COLUMNS,
    "device_rounds.csv": DEVICE_COLUMNS,
    "device_ua.csv": UA_COLUMNS,
}


def tables(scenario: Scenario) -> dict[str, Sequence[str]]:
    """Return a run's tables: asynchronous runs add ``updates.csv``."""
    if isinstance(scenario.rounds, AsyncRoundsSpec):
        return {**TABLES, "updates.csv": UPDATE_COLUMNS}
    return TABLES


def package_versions() -> dict[str, str]:
    """Return the Python version and the versions of the packages results depend on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def used_profiles(sc: Scenario, profiles: ProfileLibrary) -> dict[str, Any]:
    """Return the raw profile files a scenario uses (``devices/NAME``, ``networks/NAME``)."""
    names = {f"devices/{sc.topology.cloud.hardware}", f"networks/{sc.topology.cloud.backhaul}"}
    for edge in sc.topology.edges:
        names |= {f"devices/{edge.hardware}", f"networks/{edge.backhaul}"}
        for g in edge.devices:
            names |= {f"devices/{g.hardware}", f"networks/{g.link}"}
    return {n: profiles.raw[n] for n in sorted(names)}


@dataclass
class FolderSink:
    """Rows to the run folder as they come, flushed at every round; totals kept."""

    folder: RunFolder
    totals: Totals

    def add_round(self, row: dict[str, object]) -> None:
        """Write a round's row, flush every table, count it."""
        self.folder.append("rounds.csv", [tuple(row[c] for c in ROUND_COLUMNS)])
        self.folder.flush()
        self.totals.add(row)

    def add_devices(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Write device rows."""
        self.folder.append("device_rounds.csv", rows)

    def add_ua(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Write UA rows."""
        self.folder.append("device_ua.csv", rows)

    def add_updates(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Write asynchronous update rows."""
        self.folder.append("updates.csv", rows)


@dataclass
class CheckpointRule:
    """When to checkpoint: every ``every_rounds`` rounds and/or ``every_wall_s`` seconds."""

    every_rounds: int | None
    every_wall_s: float | None
    last_s: float = field(default_factory=time.perf_counter)

    def due(self, round_index: int) -> bool:
        """Return whether the boundary after ``round_index`` gets a checkpoint."""
        if self.every_rounds is not None and (round_index + 1) % self.every_rounds == 0:
            return True
        return self.every_wall_s is not None and (
            time.perf_counter() - self.last_s >= self.every_wall_s
        )


def execute(
    scenario: Scenario,
    inputs: SimulationInputs,
    runtime: Runtime | None,
    folder: RunFolder,
    on_round: Callable[[dict[str, object]], None] | None = None,
    start: tuple[Checkpoint, dict[str, Any]] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[SimulationResult, Totals]:
    """Run the simulation into ``folder``, checkpointing as the scenario asks.

    ``start``: a checkpoint and its models to continue from (a resume). ``stop``: asked
    after every round; True checkpoints there and raises ``KeyboardInterrupt``. Returns
    how the run ended and its summary totals.
    """
    totals = Totals(**start[0].totals) if start is not None else Totals()
    sim = Simulation(scenario, inputs, runtime, on_round, FolderSink(folder, totals))
    loop = LoopState()
    replay: dict[str, Any] | None = None
    if start is not None:
        ckpt, models = start
        if isinstance(scenario.rounds, AsyncRoundsSpec):  # replayed up to the checkpoint
            sim.result.wall_s_per_round = list(ckpt.wall_s_per_round)
            replay = models
        else:
            sim.restore(ckpt)
            if runtime is not None:
                runtime.load_models(models)
        loop = ckpt.loop
    spec = scenario.checkpoint
    if not spec.enabled:
        return sim.run(loop, stop_now=stop, resume_models=replay), totals
    rule = CheckpointRule(spec.every_rounds, spec.every_wall_s)

    def save(at: LoopState) -> None:
        ckpt = sim.snapshot(at, asdict(totals), folder.sizes())
        models = runtime.models() if runtime is not None else {}
        if sim.async_state is not None and runtime is not None:
            models["async"] = sim.async_state()
        checkpoint.save(folder.path, ckpt, models)
        rule.last_s = time.perf_counter()

    return sim.run(loop, save, rule.due, stop, replay), totals


def finish(
    folder: RunFolder,
    meta: dict[str, Any],
    totals: Totals,
    result: SimulationResult,
    timings: dict[str, Any],
    records: Sequence[RunRecord] = (),
) -> dict[str, Any]:
    """Write timings.json and run.json (the run is complete), drop the checkpoint.

    ``records``: what else the run folder keeps (the personalisation stage, shared data):
    their files, and their entries in the summary. Returns the summary.
    """
    summary = totals.summary(result.stopped_by)
    timings = {**timings, "wall_s_per_round": result.wall_s_per_round}
    extra = {"timings.json": json.dumps(timings, indent=2) + "\n"}
    for record in records:
        summary.update(record.summary(totals.virtual_time_s))
        extra.update(record.files())
    folder.finish({**meta, "summary": summary}, extra)
    checkpoint.remove(folder.path)
    return summary


def host_timings(setup_s: float, wall0: float, scenario: Scenario) -> dict[str, Any]:
    """Return timings.json's wall-clock fields (not part of the byte-identical results)."""
    return {
        "setup_s": setup_s,
        "wall_s_total": time.perf_counter() - wall0,
        "torch_threads": scenario.runtime.torch_threads,
        "host": platform.node(),
    }


def read_partial(run_dir: Path) -> dict[str, Any]:
    """Return an unfinished run's ``run.partial.json``."""
    if (run_dir / FINAL).is_file():
        raise InputError(f"{run_dir}: the run is complete (run.json exists); nothing to resume")
    path = run_dir / PARTIAL
    if not path.is_file():
        raise InputError(f"{path}: not found: {run_dir} is not an unfinished run folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict) or "scenario" not in data:
        raise InputError(f"{path}: scenario: missing (not written by fedsim run)")
    return data


def meta_without_summary(
    scenario: Scenario, source: str, profiles: dict[str, Any], model: dict[str, Any],
    algorithm: dict[str, Any], lock_step: bool | None,
) -> dict[str, Any]:  # fmt: skip
    """Return run.json's fields known before the first round."""
    packages = package_versions()
    return {
        "fedsim_version": packages["fedsim"],
        "seed": scenario.seed,
        "scenario_file": source,
        "scenario": scenario_to_dict(scenario),
        "profiles": profiles,
        "model": model,
        "algorithm": algorithm,
        "lock_step_training": lock_step,
        "packages": packages,
    }
