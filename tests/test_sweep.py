import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import sigint_default

from fedsim.errors import InputError
from fedsim.sweep import (
    SweepError,
    SweepProgress,
    end_processes,
    format_progress,
    parse_grid,
    plan_sweep,
    run_id_for,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
FAST = ["stop.max_rounds=2", "stop.target_accuracy=null"]


def test_parse_grid():
    assert parse_grid(["rounds.participants=3,5,10"]) == {"rounds.participants": ["3", "5", "10"]}
    grid = parse_grid(["b.x = 1, 2", "a=fedavg"])
    assert list(grid) == ["b.x", "a"] and grid["b.x"] == ["1", "2"]


@pytest.mark.parametrize("item", ["noequals", "=1,2", "a=1,,2", "seed=1,2", "a=1,1"])
def test_parse_grid_rejects(item):
    with pytest.raises(InputError):
        parse_grid([item])


def test_parse_grid_reports_every_problem():
    with pytest.raises(InputError) as err:
        parse_grid(["x", "a=1", "a=2"])
    assert len(err.value.problems) == 2


def test_plan_sweep_order_ids_and_seeds():
    runs = plan_sweep({"k": ["3", "5"], "algorithm.use": ["pkg.mod:Cls"]}, seeds=2, base_seed=7)
    assert [r.run_id for r in runs] == [
        "k=3__algorithm.use=pkg.mod-Cls__seed=7",
        "k=3__algorithm.use=pkg.mod-Cls__seed=8",
        "k=5__algorithm.use=pkg.mod-Cls__seed=7",
        "k=5__algorithm.use=pkg.mod-Cls__seed=8",
    ]
    assert [r.seed for r in runs] == [7, 8, 7, 8]
    assert runs[0].run_dir == "runs/" + runs[0].run_id
    assert run_id_for({}, 3) == "seed=3"
    with pytest.raises(InputError):
        plan_sweep({}, seeds=0, base_seed=1)


def _index(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "index.csv").open() as fh:
        return list(csv.DictReader(fh))


needs_cli = pytest.mark.skipif(not QUICKSTART.is_file(), reason="scenarios/quickstart.yaml missing")


@needs_cli
@pytest.mark.slow
def test_sweep_runs_resumes_and_loads(tmp_path):
    out = tmp_path / "sweep"
    grid = {"rounds.participants": ["3", "5"]}
    assert run_sweep(QUICKSTART, grid, seeds=2, out_dir=out, parallel=2, extra_sets=FAST) == out
    rows = _index(out)
    assert [r["run_id"] for r in rows] == [
        "rounds.participants=3__seed=1",
        "rounds.participants=3__seed=2",
        "rounds.participants=5__seed=1",
        "rounds.participants=5__seed=2",
    ]
    assert list(rows[0]) == ["run_id", "rounds.participants", "seed", "status", "run_dir"]
    assert {r["status"] for r in rows} == {"done"}
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["grid"] == grid and meta["scenario"] == str(QUICKSTART)
    for r in rows:
        run = json.loads((out / r["run_dir"] / "run.json").read_text())
        assert run["seed"] == int(r["seed"])
        assert run["scenario"]["rounds"]["participants"] == int(r["rounds.participants"])
        assert run["summary"]["rounds"] == 2

    # resume: only the missing run is run again, complete runs are left alone
    stamps = {r["run_id"]: (out / r["run_dir"] / "run.json").stat().st_mtime_ns for r in rows}
    shutil.rmtree(out / rows[1]["run_dir"])
    (out / rows[1]["run_dir"]).mkdir()  # a leftover without run.json
    run_sweep(QUICKSTART, grid, seeds=2, out_dir=out, parallel=1, extra_sets=FAST)
    for r in _index(out):
        mtime = (out / r["run_dir"] / "run.json").stat().st_mtime_ns
        assert (mtime == stamps[r["run_id"]]) == (r["run_id"] != rows[1]["run_id"])
        assert r["status"] == "done"

    from fedsim.analysis import load_sweep, target_table

    rs = load_sweep(out)
    assert len(rs) == 4
    assert len(target_table(rs, "accuracy", 0.01)) == 2

    with pytest.raises(InputError, match="another scenario, grid"):
        run_sweep(QUICKSTART, {"rounds.participants": ["3"]}, seeds=2, out_dir=out, extra_sets=FAST)


@needs_cli
def test_sweep_failure_names_the_run(tmp_path):
    out = tmp_path / "bad"
    bad = "topology.edges.0.devices.0.hardware"
    with pytest.raises(SweepError) as err:
        run_sweep(QUICKSTART, {bad: ["no_such_profile"]}, seeds=1, out_dir=out, extra_sets=FAST)
    run_id = f"{bad}=no_such_profile__seed=1"
    msg = str(err.value)
    assert run_id in msg
    assert "no_such_profile" in msg.split("stderr (last lines)")[1]
    assert _index(out)[0]["status"] == "failed"
    assert (out / "logs" / f"{run_id}.log").is_file()


@needs_cli
def test_sweep_validates_every_combination_before_running(tmp_path):
    out = tmp_path / "typo"
    with pytest.raises(InputError) as err:
        run_sweep(
            QUICKSTART,
            {"rounds.participants": ["3", "999", "0"]},
            seeds=3,
            out_dir=out,
        )
    problems = err.value.problems
    assert any("participants=999" in p and "larger than the 30 devices" in p for p in problems)
    assert any(p.startswith("[rounds.participants=0]") for p in problems)
    assert not (out / "runs").exists()  # nothing started


def _processes_under(folder: Path) -> list[int]:
    """Return the pids of processes whose command line names a path under ``folder``."""
    needle = str(folder).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if any(needle in a for a in args):
            pids.append(int(proc.name))
    return pids


def _wait_for(condition, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@needs_cli
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
def test_sweep_stops_on_sigint_to_its_group_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "fedsim", "sweep", str(QUICKSTART), "--seeds", "4"]
    cmd += ["--parallel", "2", "--out", str(out)] + [a for s in FAST for a in ("--set", s)]
    # its own process group, as a shell gives a foreground job: Ctrl-C signals the group
    sweep = subprocess.Popen(
        cmd, start_new_session=True, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_default,
    )  # fmt: skip
    try:

        def one_done_and_two_running() -> bool:  # one of the two running has just started
            index = out / "index.csv"
            done = index.is_file() and any(r["status"] == "done" for r in _index(out))
            return done and len(_processes_under(out / "runs")) >= 2

        _wait_for(one_done_and_two_running, 120, sweep)
        t0 = time.monotonic()
        os.killpg(sweep.pid, signal.SIGINT)
        _, stderr = sweep.communicate(timeout=10)
        stopped_s = time.monotonic() - t0
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert stopped_s <= 10 and sweep.returncode == 130, stderr
    assert _processes_under(out) == []  # no run left behind
    rows = _index(out)
    statuses = [r["status"] for r in rows]
    assert "done" in statuses and "interrupted" in statuses, statuses
    assert set(statuses) <= {"done", "interrupted", "not run"}
    assert "sweep: 4 of 4 runs to run" in stderr and "1/4 runs done" in stderr
    assert "ETA" in stderr and "run the same command again to resume" in stderr
    kept = {
        r["run_id"]: (out / r["run_dir"] / "run.json").stat().st_mtime_ns
        for r in rows
        if r["status"] == "done"
    }

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = _index(out)
    assert [r["status"] for r in rows] == ["done"] * 4
    for run_id, mtime in kept.items():  # finished runs were kept, not run again
        assert (out / "runs" / run_id / "run.json").stat().st_mtime_ns == mtime
    assert "4/4 runs done" in again.stderr
    assert not list((out / "runs").glob(".*"))  # no temporary folder left


def test_a_run_interrupted_while_python_starts_counts_as_interrupted():
    """Ctrl-C reaching a run's interpreter while it imports ``site`` makes it exit 1."""
    from fedsim.sweep_runner import stopped_by_interrupt

    startup = (  # the end of such a run's stderr, as a CI sweep logged it
        "Fatal Python error: init_import_site: Failed to import the site module\n"
        "Python runtime state: initialized\nTraceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/functools.py", line 922, in <module>\n'
        "    class singledispatchmethod:\nKeyboardInterrupt\n"
    )
    assert stopped_by_interrupt(1, startup)
    assert stopped_by_interrupt(130, "") and stopped_by_interrupt(-signal.SIGINT, "")
    assert not stopped_by_interrupt(2, "error: scenario.yaml: seed: expected an integer\n")
    assert not stopped_by_interrupt(1, "Traceback ...\nValueError: KeyboardInterrupt here?\n")
    assert not stopped_by_interrupt(0, "KeyboardInterrupt\n")


def test_end_processes_interrupts_then_kills():
    code = "import signal, time; {} print('ready', flush=True); time.sleep(60)"
    pipes = {
        "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL, "text": True,
        "preexec_fn": sigint_default,
    }  # fmt: skip
    polite = subprocess.Popen([sys.executable, "-c", code.format("")], **pipes)
    ignoring = "signal.signal(signal.SIGINT, signal.SIG_IGN);"
    stubborn = subprocess.Popen([sys.executable, "-c", code.format(ignoring)], **pipes)
    for proc in (polite, stubborn):  # handlers in place
        assert proc.stdout.readline() == "ready\n"
    t0 = time.monotonic()
    end_processes([polite, stubborn], grace_s=1.0, settle_s=0.1)
    assert time.monotonic() - t0 < 3
    assert polite.returncode == -signal.SIGINT  # died of SIGINT (KeyboardInterrupt)
    assert stubborn.returncode == -signal.SIGKILL
    for proc in (polite, stubborn):
        proc.stdout.close()


def test_format_progress():
    start = SweepProgress(12, 4, 0, None, "started", 0.0, 0.0, None)
    assert format_progress(start) == "sweep: 8 of 12 runs to run (4 already done)"
    p = SweepProgress(12, 6, 1, "k=3__seed=2", "done", 41.2, 90.0, 250.0)
    assert format_progress(p) == (
        "sweep: 6/12 runs done, 1 failed; k=3__seed=2 done after 41 s; ETA 4 min 10 s"
    )


@needs_cli
@pytest.mark.slow
def test_sweep_resumes_a_cut_run_from_its_checkpoint(tmp_path):
    # the sweep's own run, cut after round 3 of 6 (its checkpoint after round 2): the next
    # sweep continues it with `fedsim resume`, and its files equal a clean sweep's
    from fedsim.api import run
    from fedsim.config import load_scenario

    sets = ["stop.max_rounds=6", "stop.target_accuracy=null", "checkpoint.every_rounds=2"]
    clean, cut = tmp_path / "clean", tmp_path / "cut"
    run_sweep(QUICKSTART, {}, seeds=1, out_dir=clean, extra_sets=sets)
    run_dir = cut / "runs" / "seed=1"

    def crash(row):
        if row["round"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(load_scenario(QUICKSTART, [*sets, "seed=1"]), run_dir, on_round=crash,
            source=str(QUICKSTART))  # fmt: skip
    assert (run_dir / "checkpoint.json").is_file() and not (run_dir / "run.json").exists()
    run_sweep(QUICKSTART, {}, seeds=1, out_dir=cut, extra_sets=sets)
    log = (cut / "logs" / "seed=1.log").read_text()
    assert " resume " in log.splitlines()[0]  # continued, not started over
    for name in ("rounds.csv", "device_rounds.csv", "device_ua.csv", "run.json"):
        assert (run_dir / name).read_bytes() == (clean / "runs" / "seed=1" / name).read_bytes()
