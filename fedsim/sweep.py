"""Run every combination of a parameter grid × seeds as ``fedsim run`` subprocesses, resumably."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from fedsim.errors import InputError

__all__ = ["SweepError", "SweepRun", "parse_grid", "plan_sweep", "run_sweep", "run_id_for"]

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


class SweepError(RuntimeError):
    """A run of a sweep failed; the message names the run and ends with its stderr tail."""

    exit_code = 1


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its id, grid values, seed and folder (relative to the sweep)."""

    run_id: str
    params: dict[str, str]
    seed: int
    run_dir: str


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
        key, sep, values = item.partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",")]
        if not sep or not key:
            problems.append(f"--grid {item}: expected key.path=value1,value2,...")
        elif any(v == "" for v in vals):
            problems.append(f"--grid {item}: empty value")
        elif key in grid:
            problems.append(f"--grid {item}: key {key} given twice")
        elif key == "seed":
            problems.append(f"--grid {item}: seeds come from the sweep's seed count, not the grid")
        elif len(set(vals)) != len(vals):
            problems.append(f"--grid {item}: a value is repeated")
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


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_index(
    out_dir: Path, keys: list[str], runs: list[SweepRun], status: dict[str, str]
) -> None:
    rows = [["run_id", *keys, "seed", "status", "run_dir"]]
    for r in runs:
        rows.append(
            [r.run_id, *(r.params[k] for k in keys), str(r.seed), status[r.run_id], r.run_dir]
        )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    _write_atomic(out_dir / "index.csv", buf.getvalue())


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_sweep(
    scenario: Path,
    grid: dict[str, list[str]],
    seeds: int,
    out_dir: Path,
    parallel: int = 1,
    extra_sets: Sequence[str] = (),
    python: str | None = None,
) -> Path:
    """Run every grid combination × seed into one sweep folder; resume where it stopped.

    Each run is ``python -m fedsim run SCENARIO --out OUT_DIR/runs/RUN_ID --quiet
    --set <extra_sets>... --set key=value... --set seed=S`` (grid values override
    ``extra_sets``). Seed index ``i`` uses ``S = scenario seed + i``. A run folder that
    already holds ``run.json`` is complete (``fedsim run`` writes folders atomically) and
    is skipped; a leftover folder without it is removed and run again.

    The sweep folder gets ``sweep.json`` (scenario, grid, seeds, base seed, extra sets),
    ``index.csv`` (``run_id``, one column per grid key, ``seed``, ``status``,
    ``run_dir``; status ``done``, ``failed``, ``not run`` or ``pending``, rewritten
    after every run) and ``logs/RUN_ID.log`` (each run's stdout and stderr).

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
    """
    scenario = Path(scenario).resolve()
    out_dir = Path(out_dir)
    if not scenario.is_file():
        raise InputError(f"{scenario}: scenario file not found")
    if parallel < 1:
        raise InputError(f"parallel: expected at least 1 (got {parallel})")
    for item in extra_sets:
        if "=" not in item:
            raise InputError(f"--set {item}: expected key.path=value")
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
        _write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    (out_dir / "runs").mkdir(exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)

    status = {r.run_id: "pending" for r in runs}
    todo = []
    for r in runs:
        run_dir = out_dir / r.run_dir
        if (run_dir / "run.json").is_file():
            status[r.run_id] = "done"
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            todo.append(r)
    lock = threading.Lock()
    _write_index(out_dir, keys, runs, status)

    def execute(r: SweepRun) -> None:
        cmd = [
            python or sys.executable,
            "-m",
            "fedsim",
            "run",
            str(scenario),
            "--out",
            str(out_dir / r.run_dir),
            "--quiet",
        ]
        for item in [*extra_sets, *(f"{k}={v}" for k, v in r.params.items()), f"seed={r.seed}"]:
            cmd += ["--set", item]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        (out_dir / "logs" / f"{r.run_id}.log").write_text(
            f"$ {' '.join(cmd)}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
        ok = proc.returncode == 0 and (out_dir / r.run_dir / "run.json").is_file()
        with lock:
            status[r.run_id] = "done" if ok else "failed"
            _write_index(out_dir, keys, runs, status)
        if not ok:
            raise SweepError(
                f"sweep run {r.run_id} failed (exit code {proc.returncode})\n"
                f"command: {' '.join(cmd)}\nlog: {out_dir / 'logs' / (r.run_id + '.log')}\n"
                f"stderr (last lines):\n{_tail(proc.stderr) or '(empty)'}"
            )

    if todo:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(execute, r) for r in todo]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            wait(futures)
        with lock:
            for r in todo:
                if status[r.run_id] == "pending":
                    status[r.run_id] = "not run"
            _write_index(out_dir, keys, runs, status)
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
        if errors:
            first = errors[0]
            if len(errors) > 1:
                raise SweepError(f"{first}\n({len(errors)} runs failed; see index.csv)")
            raise first  # type: ignore[misc]
    return out_dir
