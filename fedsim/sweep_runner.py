"""Running a sweep's runs: child processes, progress, Ctrl-C, the index file."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path


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


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_index(
    out_dir: Path, keys: list[str], runs: list[SweepRun], status: dict[str, str]
) -> None:
    """Rewrite ``index.csv``: one row per run with its grid values, seed and status."""
    rows = [["run_id", *keys, "seed", "status", "run_dir"]]
    for r in runs:
        rows.append(
            [r.run_id, *(r.params[k] for k in keys), str(r.seed), status[r.run_id], r.run_dir]
        )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    write_atomic(out_dir / "index.csv", buf.getvalue())


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


def stopped_by_interrupt(returncode: int, stderr: str) -> bool:
    """Return whether a run's process ended because it was interrupted (Ctrl-C, kill).

    Its exit code says so, except for a Python interpreter that is interrupted while it
    is still starting up (importing ``site``): it exits with 1 ("Fatal Python error:
    init_import_site") and its stderr ends with ``KeyboardInterrupt``.
    """
    if returncode in _INTERRUPT_CODES:
        return True
    return returncode != 0 and stderr.rstrip().endswith("KeyboardInterrupt")


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
def sigterm_interrupts() -> Iterator[None]:
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


class Runner:
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
        stopped = self.interrupted or stopped_by_interrupt(proc.returncode, stderr)
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
            write_index(self.out_dir, self.keys, self.runs, self.status)
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
