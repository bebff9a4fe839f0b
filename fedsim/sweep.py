"""Run every combination of a parameter grid × seeds as ``fedsim run`` subprocesses, resumably."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from fedsim.errors import InputError
from fedsim.results import PARTIAL

__all__ = [
    "SweepError",
    "SweepInterrupted",
    "SweepProgress",
    "SweepRun",
    "end_processes",
    "format_progress",
    "parse_grid",
    "plan_sweep",
    "run_sweep",
    "run_id_for",
]

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


class SweepError(RuntimeError):
    """A run of a sweep failed; the message names the run and ends with its stderr tail.

    ``fedsim sweep`` prints :meth:`one_line` and exits with ``exit_code`` (2, as for any
    bad input: the failed run's own error says what to fix).
    """

    exit_code = 2

    def one_line(self) -> str:
        """Return the message as one line: the run, its exit code, last error line and log.

        The last line of the run's stderr is its own one-line error (``error: FILE:
        FIELD: ...``) or the last line of a traceback.
        """
        lines = [line.strip() for line in str(self).splitlines() if line.strip()]
        head = lines[0] if lines else "a sweep run failed"
        log = next((line for line in lines if line.startswith("log: ")), None)
        count = next((line for line in lines if line.endswith("runs failed; see index.csv)")), "")
        tail = lines[lines.index(log) + 1 :] if log in lines else []
        reason = next((line for line in reversed(tail) if not line.startswith(("(", "stderr"))), "")
        parts = [f"{head}: {reason.removeprefix('error: ')}" if reason else head, log, count]
        return "; ".join(part for part in parts if part)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep; the message says how many runs are done and how to resume."""


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands, passed to ``run_sweep``'s ``progress`` callback.

    Attributes
    ----------
    total, done, failed : int
        Runs in the sweep, runs complete (those of earlier calls included), runs failed.
    run_id : str or None
        The run that just ended; None for the call made before the first run starts.
    status : str
        That run's status (``done``, ``failed``, ``interrupted``), or ``started``.
    run_wall_s, elapsed_s : float
        Wall seconds of that run, and since the sweep started running.
    eta_s : float or None
        Estimated wall seconds left (elapsed time per ended run × runs left).
    """

    total: int
    done: int
    failed: int
    run_id: str | None
    status: str
    run_wall_s: float
    elapsed_s: float
    eta_s: float | None


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


def _fmt_duration(seconds: float) -> str:
    """Format seconds as ``42 s``, ``3 min 10 s`` or ``1 h 05 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_progress(p: SweepProgress) -> str:
    """Return one line for ``p``: runs done / total, the run that ended, and the ETA."""
    if p.run_id is None:
        before = f" ({p.done} already done)" if p.done else ""
        return f"sweep: {p.total - p.done} of {p.total} runs to run{before}"
    failed = f", {p.failed} failed" if p.failed else ""
    eta = "" if p.eta_s is None else f"; ETA {_fmt_duration(p.eta_s)}"
    return (
        f"sweep: {p.done}/{p.total} runs done{failed}; {p.run_id} {p.status} "
        f"after {_fmt_duration(p.run_wall_s)}{eta}"
    )


#: Exit codes of a run stopped by SIGINT (``fedsim run`` returns 130; a Python process
#: interrupted before ``main`` dies of the signal) or by SIGTERM/SIGKILL.
_INTERRUPT_CODES = frozenset({130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL})


def end_processes(
    procs: Sequence[subprocess.Popen[str]], grace_s: float = 3.0, settle_s: float = 0.5
) -> None:
    """Stop child processes: let them exit, then SIGINT, then SIGKILL after ``grace_s``.

    A terminal's Ctrl-C reaches the children too (they share the sweep's process group), so
    they first get ``settle_s`` to exit on their own; those still running get SIGINT (a
    second one could cut short their clean-up), and whatever is left at ``grace_s`` is
    killed. Returns once every process has exited.

    Parameters
    ----------
    procs : sequence of subprocess.Popen
        The processes (some may have exited already).
    grace_s : float
        Seconds from the call until SIGKILL.
    settle_s : float
        Seconds to wait before sending SIGINT.
    """
    start = time.monotonic()

    def running() -> list[subprocess.Popen[str]]:
        return [p for p in procs if p.poll() is None]

    signalled = False
    while running():
        now = time.monotonic() - start
        if now >= grace_s:
            for p in running():
                p.kill()
            for p in procs:
                p.wait()
            return
        if now >= settle_s and not signalled:
            for p in running():
                p.send_signal(signal.SIGINT)
            signalled = True
        time.sleep(0.02)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while in the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM in the block (main thread only): clean-up is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Runner:
    """Run a sweep's runs as child processes, record their status, stop them on request."""

    def __init__(
        self,
        out_dir: Path,
        keys: list[str],
        runs: list[SweepRun],
        status: dict[str, str],
        commands: dict[str, list[str]],
        progress: Callable[[SweepProgress], None] | None,
    ) -> None:
        self.out_dir, self.keys, self.runs, self.status = out_dir, keys, runs, status
        self.commands, self.progress = commands, progress
        self.lock = threading.Lock()
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.accepting = True  # False once a run failed: no new run starts
        self.interrupted = False  # Ctrl-C: running runs are stopped too
        self.start = time.monotonic()
        self.ended_here = 0
        self.todo = sum(s == "pending" for s in status.values())

    def counts(self) -> tuple[int, int]:
        """Return how many runs are done and how many failed."""
        values = list(self.status.values())
        return values.count("done"), values.count("failed")

    def report(self, run_id: str | None, status: str, wall_s: float) -> None:
        """Pass the sweep's progress to the callback (call with the lock held)."""
        if self.progress is None:
            return
        done, failed = self.counts()
        elapsed = time.monotonic() - self.start
        left = self.todo - self.ended_here
        known = self.ended_here and left and not self.interrupted
        eta = elapsed / self.ended_here * left if known else None
        total = len(self.runs)
        self.progress(SweepProgress(total, done, failed, run_id, status, wall_s, elapsed, eta))

    def execute(self, r: SweepRun) -> None:
        """Run one run to its end; raise SweepError if it failed (not if interrupted)."""
        cmd = self.commands[r.run_id]
        with self.lock:
            if not self.accepting:
                return
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.procs[r.run_id] = proc
        t0 = time.monotonic()
        stdout, stderr = proc.communicate()
        log = self.out_dir / "logs" / f"{r.run_id}.log"
        log.write_text(f"$ {' '.join(cmd)}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        complete = (self.out_dir / r.run_dir / "run.json").is_file()  # written last
        stopped = self.interrupted or proc.returncode in _INTERRUPT_CODES
        ok = complete and (proc.returncode == 0 or stopped)
        with self.lock:
            del self.procs[r.run_id]
            if not ok and stopped:
                self.interrupted = True  # the child was stopped: the sweep stops too
                self.accepting = False
                status = "interrupted"
            else:
                status = "done" if ok else "failed"
            self.status[r.run_id] = status
            self.ended_here += 1
            _write_index(self.out_dir, self.keys, self.runs, self.status)
            self.report(r.run_id, status, time.monotonic() - t0)
            if status == "failed":
                self.accepting = False
        if status == "failed":
            raise SweepError(
                f"sweep run {r.run_id} failed (exit code {proc.returncode})\n"
                f"command: {' '.join(cmd)}\nlog: {log}\n"
                f"stderr (last lines):\n{_tail(stderr) or '(empty)'}"
            )

    def interrupt(self) -> list[subprocess.Popen[str]]:
        """Start no new run and return the running ones' processes."""
        with self.lock:
            self.interrupted = True
            self.accepting = False
            return list(self.procs.values())

    def _wait(self, futures: list[Future[None]]) -> None:
        """Wait for every run; after a failure, for the started ones only; not after Ctrl-C."""
        while not self.interrupted:
            done, pending = wait(futures, timeout=0.2)
            if not pending:
                return
            if any(not f.cancelled() and f.exception() is not None for f in done):
                for f in pending:
                    f.cancel()

    def run_all(self, todo: list[SweepRun], parallel: int) -> list[BaseException]:
        """Run ``todo``, ``parallel`` at a time; return the failures' SweepErrors.

        After a failure, runs already started finish and no new run starts. On Ctrl-C
        (KeyboardInterrupt, or a run killed by SIGINT) the running runs are stopped
        within seconds (:func:`end_processes`) and ``self.interrupted`` is set.
        """
        pool = ThreadPoolExecutor(max_workers=parallel)
        futures: list[Future[None]] = []
        try:
            futures = [pool.submit(self.execute, r) for r in todo]
            self._wait(futures)
        except KeyboardInterrupt:
            self.interrupt()
        finally:
            procs = self.interrupt() if self.interrupted else []
            with _interrupts_ignored():
                end_processes(procs)
                for f in futures:
                    f.cancel()
                pool.shutdown(wait=True)
        return [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]


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
        _write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
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
    _prepare_folder(out_dir, meta)
    status = {r.run_id: "pending" for r in runs}
    todo = _runs_to_do(out_dir, runs, status)
    _write_index(out_dir, keys, runs, status)
    commands = _run_commands(scenario, out_dir, todo, extra_sets, python or sys.executable)
    runner = _Runner(out_dir, keys, runs, status, commands, progress)
    if not todo:
        return out_dir
    runner.report(None, "started", 0.0)
    with _sigterm_interrupts():
        errors = runner.run_all(todo, parallel)
    for r in todo:
        if status[r.run_id] == "pending":
            status[r.run_id] = "not run"
    _write_index(out_dir, keys, runs, status)
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
