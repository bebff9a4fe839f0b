"""Run every combination of a parameter grid × seeds as ``fedsim run`` subprocesses, resumably."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedsim.config import option_label
from fedsim.errors import InputError
from fedsim.results import PARTIAL
from fedsim.sweep_runner import (  # the sweep's public types, re-exported
    Runner,
    SweepError,
    SweepInterrupted,
    SweepProgress,
    SweepRun,
    end_processes,
    format_progress,
    sigterm_interrupts,
    write_atomic,
    write_index,
)

__all__ = [
    "SweepError", "SweepInterrupted", "SweepProgress", "SweepRun", "end_processes",
    "format_progress", "parse_grid", "plan_sweep", "run_id_for", "run_sweep",
]  # fmt: skip

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """Parse ``key.path=v1,v2,...`` items into a grid.

    Parameters
    ----------
    items : sequence of str
        E.g. ``["rounds.participants=3,5,10", "algorithm.use=fedavg,fedadam"]``.

    Returns
    -------
    dict of str to list of str
        Keys in the order given, values as strings (``fedsim run --set`` parses them).

    Raises
    ------
    InputError
        For an item without ``=``, an empty key or value, a repeated key or value, or
        the key ``seed`` (seeds are the sweep's ``seeds`` argument).
    """
    grid: dict[str, list[str]] = {}
    problems = []
    for item in items:
        label = option_label("--grid", item)
        key, sep, values = item.partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",")]
        if not sep or not key:
            problems.append(f"{label}: expected key.path=value1,value2,...")
        elif any(v == "" for v in vals):
            problems.append(f"{label}: empty value")
        elif key in grid:
            problems.append(f"{label}: key {key} given twice")
        elif key == "seed":
            problems.append(f"{label}: seeds come from the sweep's seed count, not the grid")
        elif len(set(vals)) != len(vals):
            problems.append(f"{label}: a value is repeated")
        else:
            grid[key] = vals
    if problems:
        raise InputError(problems)
    return grid


def run_id_for(params: dict[str, str], seed: int) -> str:
    """Return the folder-safe run id ``key=value__key=value__seed=S``."""
    parts = [f"{k}={v}" for k, v in params.items()] + [f"seed={seed}"]
    return _SAFE.sub("-", "__".join(parts))


def _base_seed(scenario: Path) -> int:
    from fedsim.yamlio import load_yaml_file

    raw = load_yaml_file(scenario)
    seed = raw.get("seed", 0) if isinstance(raw, dict) else 0
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"{scenario}: seed: expected a non-negative integer (got {seed!r})")
    return seed


def _validate_combinations(
    scenario: Path, grid: dict[str, list[str]], extra_sets: Sequence[str], runs: list[SweepRun]
) -> None:
    """Validate the scenario under every grid combination before any run starts."""
    from fedsim.config import load_scenario

    problems: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for r in runs:
        sets = [*extra_sets, *(f"{k}={v}" for k, v in r.params.items()), f"seed={r.seed}"]
        if tuple(sets[:-1]) in seen:
            continue
        seen.add(tuple(sets[:-1]))
        try:
            load_scenario(scenario, sets)
        except InputError as exc:
            where = ", ".join(f"{k}={v}" for k, v in r.params.items()) or "(no grid values)"
            problems += [f"[{where}] {p}" for p in exc.problems if f"[{where}] {p}" not in problems]
    if problems:
        raise InputError(problems)


def plan_sweep(grid: dict[str, list[str]], seeds: int, base_seed: int) -> list[SweepRun]:
    """Return the runs of a sweep: every grid combination (in grid order) × seeds.

    Seed index ``i`` (0-based) runs with seed ``base_seed + i``, so a one-seed sweep
    reproduces the scenario's own seed.
    """
    if seeds < 1:
        raise InputError(f"seeds: expected at least 1 (got {seeds})")
    keys = list(grid)
    runs = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        for i in range(seeds):
            seed = base_seed + i
            rid = run_id_for(params, seed)
            runs.append(SweepRun(rid, params, seed, f"runs/{rid}"))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise InputError("grid values collide once made folder-safe; rename them")
    return runs


def _run_commands(
    scenario: Path, out_dir: Path, runs: list[SweepRun], extra_sets: Sequence[str], python: str
) -> dict[str, list[str]]:
    """Return each run's command: ``fedsim resume`` for a run a checkpoint can continue."""
    commands = {}
    for r in runs:
        run_dir = out_dir / r.run_dir
        if (run_dir / PARTIAL).is_file():
            commands[r.run_id] = [python, "-m", "fedsim", "resume", str(run_dir), "--quiet"]
            continue
        cmd = [python, "-m", "fedsim", "run", str(scenario), "--out", str(run_dir)]
        cmd.append("--quiet")
        for item in [*extra_sets, *(f"{k}={v}" for k, v in r.params.items()), f"seed={r.seed}"]:
            cmd += ["--set", item]
        commands[r.run_id] = cmd
    return commands


def _prepare_folder(out_dir: Path, meta: dict[str, object]) -> None:
    """Create the sweep folder, or check that it holds the same sweep."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "sweep.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} != meta:
            raise InputError(
                f"{out_dir}: holds a sweep with another scenario, grid, seeds or "
                "overrides; use a new folder"
            )
    else:
        write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    (out_dir / "runs").mkdir(exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)


def _runs_to_do(out_dir: Path, runs: list[SweepRun], status: dict[str, str]) -> list[SweepRun]:
    """Mark complete runs ``done``; clear what interrupted runs left; return the rest.

    An interrupted run that got as far as its run folder (``run.partial.json``) is kept:
    it is resumed from its last checkpoint (docs/reliability.md).
    """
    todo = []
    for r in runs:
        run_dir = out_dir / r.run_dir
        if (run_dir / "run.json").is_file():
            status[r.run_id] = "done"
            continue
        if run_dir.exists() and not (run_dir / PARTIAL).is_file():
            shutil.rmtree(run_dir)
        for tmp in run_dir.parent.glob(f".{run_dir.name}.tmp*"):  # a killed run's temp folder
            shutil.rmtree(tmp, ignore_errors=True)
        todo.append(r)
    return todo


def run_sweep(
    scenario: Path,
    grid: dict[str, list[str]],
    seeds: int,
    out_dir: Path,
    parallel: int = 1,
    extra_sets: Sequence[str] = (),
    python: str | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
) -> Path:
    """Run every grid combination × seed into one sweep folder; resume where it stopped.

    Each run is ``python -m fedsim run SCENARIO --out OUT_DIR/runs/RUN_ID --quiet
    --set <extra_sets>... --set key=value... --set seed=S`` (grid values override
    ``extra_sets``). Seed index ``i`` uses ``S = scenario seed + i``. A run folder that
    already holds ``run.json`` is complete (``fedsim run`` writes it last) and is
    skipped; an interrupted run's folder (``run.partial.json``) is continued from its last
    checkpoint with ``python -m fedsim resume``; any other leftover is removed and run
    again.

    The sweep folder gets ``sweep.json`` (scenario, grid, seeds, base seed, extra sets),
    ``index.csv`` (``run_id``, one column per grid key, ``seed``, ``status``,
    ``run_dir``; status ``done``, ``failed``, ``interrupted``, ``not run`` or
    ``pending``, rewritten after every run) and ``logs/RUN_ID.log`` (each run's stdout
    and stderr).

    Ctrl-C (SIGINT to the process group, as a terminal sends, or to this process alone)
    or SIGTERM stops the sweep: no new run starts, the running runs are stopped within
    a few seconds (SIGINT, then SIGKILL; see :func:`end_processes`) and marked
    ``interrupted``, finished runs are kept, and :class:`SweepInterrupted` is raised.
    Calling again with the same arguments resumes.

    Parameters
    ----------
    scenario : Path
        The scenario YAML file.
    grid : dict of str to list of str
        ``key.path`` to values (see :func:`parse_grid`); may be empty (seeds only).
    seeds : int
        Seeds per combination.
    out_dir : Path
        The sweep folder (created; an existing one is resumed).
    parallel : int
        Runs at a time.
    extra_sets : sequence of str
        ``key.path=value`` overrides applied to every run.
    python : str, optional
        The interpreter for the runs; default the current one.
    progress : callable, optional
        Called with a :class:`SweepProgress` once before the first run and after every
        run (from worker threads, one call at a time); :func:`format_progress` makes it
        a line.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    InputError
        Bad arguments, or a resumed sweep folder made with another scenario, grid or
        set of overrides.
    SweepError
        A run failed: names the run and its command and ends with its stderr tail.
        Runs already started finish; runs not yet started are left ``not run``.
    SweepInterrupted
        Ctrl-C or SIGTERM (a ``KeyboardInterrupt``): says how many runs are done.
    """
    scenario = Path(scenario).resolve()
    out_dir = Path(out_dir)
    if not scenario.is_file():
        raise InputError(f"{scenario}: scenario file not found")
    if parallel < 1:
        raise InputError(f"parallel: expected at least 1 (got {parallel})")
    for item in extra_sets:
        if "=" not in item:
            raise InputError(f"{option_label('--set', item)}: expected key.path=value")
    base_seed = _base_seed(scenario)
    runs = plan_sweep(grid, seeds, base_seed)
    _validate_combinations(scenario, grid, extra_sets, runs)
    keys = list(grid)
    meta = {
        "scenario": str(scenario),
        "grid": grid,
        "seeds": seeds,
        "base_seed": base_seed,
        "extra_sets": list(extra_sets),
    }
    _prepare_folder(out_dir, meta)
    status = {r.run_id: "pending" for r in runs}
    todo = _runs_to_do(out_dir, runs, status)
    write_index(out_dir, keys, runs, status)
    commands = _run_commands(scenario, out_dir, todo, extra_sets, python or sys.executable)
    runner = Runner(out_dir, keys, runs, status, commands, progress)
    if not todo:
        return out_dir
    runner.report(None, "started", 0.0)
    with sigterm_interrupts():
        errors = runner.run_all(todo, parallel)
    for r in todo:
        if status[r.run_id] == "pending":
            status[r.run_id] = "not run"
    write_index(out_dir, keys, runs, status)
    done, failed = runner.counts()
    if runner.interrupted:
        also = f" ({failed} failed: see index.csv)" if failed else ""
        raise SweepInterrupted(
            f"sweep interrupted: {done} of {len(runs)} runs done{also}, kept in {out_dir}; "
            "run the same command again to resume"
        )
    if errors:
        first = errors[0]
        if len(errors) > 1:
            raise SweepError(f"{first}\n({len(errors)} runs failed; see index.csv)")
        raise first
    return out_dir
