"""End-to-end runs: learning, determinism, drop-out, CLI errors (real torch, SimPy, data)."""

import filecmp
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, shared_data_dir

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.sim.availability import Availability

QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
RESULT_FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")


def quick(tmp_path: Path, name: str, *sets: str):
    return run(load_scenario(QUICKSTART, ["stop.max_rounds=6", *sets]), tmp_path / name)


def test_fedavg_learns_digits(tmp_path):
    res = run(load_scenario(QUICKSTART, ["stop.max_rounds=12"]), tmp_path / "r")
    acc = res.rounds["accuracy"].dropna()
    assert acc.iloc[-1] > 0.7  # chance is 0.1
    assert acc.iloc[-1] > acc.iloc[0]
    assert res.rounds["ua_mean"].dropna().iloc[-1] > 0.6


def test_fedavg_learns_mnist(tmp_path):
    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    sets = [
        "data.dataset=mnist", f"data.dir={data}", "model=mtfl_2nn", "stop.max_rounds=3",
        "topology.edges.0.devices.0.count=10", "topology.edges.0.devices.1.count=0",
    ]  # fmt: skip
    sc = load_scenario(
        QUICKSTART,
        [s for s in sets if "count=0" not in s]
        + ["data.partition.kind=iid", "rounds.participants=5", "rounds.deadline_s=null",
           "algorithm.params.batch_size=20", "algorithm.params.local_epochs=1",
           "evaluation.ua=false"],
    )  # fmt: skip
    res = run(sc, tmp_path / "mnist")
    acc = res.rounds["accuracy"].dropna()
    assert acc.iloc[-1] > 0.85  # chance is 0.1


def test_same_seed_identical_files_and_other_seed_differs(tmp_path):
    a = quick(tmp_path, "a")
    b = quick(tmp_path, "b")
    c = quick(tmp_path, "c", "seed=2")
    for f in RESULT_FILES:
        assert filecmp.cmp(a.path / f, b.path / f, shallow=False), f
        assert not filecmp.cmp(a.path / f, c.path / f, shallow=False), f
    assert (a.path / "run.json").read_bytes() == (b.path / "run.json").read_bytes()


def test_dropout_follows_the_availability_process(tmp_path):
    res = quick(
        tmp_path, "d", "availability.mean_on_s=2.0", "availability.mean_off_s=1.0",
        "stop.max_rounds=10",
    )  # fmt: skip
    rows = res.device_rounds
    assert (rows["status"] == "dropped").sum() > 0
    sc = load_scenario(QUICKSTART)
    avail = Availability(
        sc.availability.model_copy(update={"mean_on_s": 2.0, "mean_off_s": 1.0}), sc.seed
    )
    for row in rows.itertuples():
        assert avail.online_at(row.device_id, row.start_s)  # only on-line devices are chosen
        off = avail.offline_after(row.device_id, row.start_s)
        if row.status == "dropped":
            assert row.end_s == pytest.approx(off)
        elif row.status == "completed":
            assert off >= row.end_s - row.wait_s - 1e-9
    dropped = rows[rows["status"] == "dropped"]
    assert (dropped["bytes_up"] < 9640).all()


def test_learning_false_runs_systems_model_only(tmp_path):
    res = quick(tmp_path, "s", "learning=false")
    assert res.rounds["accuracy"].isna().all()
    assert res.rounds["bytes_up"].sum() > 0
    learned = quick(tmp_path, "l")
    # the systems model is the same whether or not training runs
    cols = ["virtual_time_s", "bytes_up", "bytes_down", "energy_j", "completed"]
    pd.testing.assert_frame_equal(res.rounds[cols], learned.rounds[cols])


def fedsim_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedsim", *args], cwd=cwd, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


BAD = {
    "unknown key": ("colour: blue\n", "colour: unknown key"),
    "wrong type": ("", "seed: Input should be a valid integer"),
    "missing profile": ("", "unknown device profile 'rpi9'"),
    "duplicate key": ("seed: 2\n", "duplicate key 'seed'"),
    "unreadable": ("rounds: [1,\n", "unreadable YAML"),
    "bad trace": ("traces: {bandwidth: bw.csv}\n", "bw.csv: line 3, column up_mbps"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_scenarios_exit_2_and_write_nothing(tmp_path, case):
    extra, message = BAD[case]
    text = QUICKSTART.read_text()
    if case == "wrong type":
        text = text.replace("seed: 1", "seed: one")
    if case == "missing profile":
        text = text.replace("hardware: rpi4", "hardware: rpi9")
    if case == "bad trace":
        (tmp_path / "bw.csv").write_text("device,time_s,up_mbps,down_mbps\n15,0,5,9\n15,10,-1,9\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text + extra)
    for command in ("run", "validate"):
        out = tmp_path / "out"
        proc = fedsim_cli(command, str(path), *(["--out", str(out)] if command == "run" else []),
                          cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        # the file the problem is in: the scenario, or the trace it names
        assert str(tmp_path / "bw.csv" if case == "bad trace" else path) in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not out.exists()
        assert not list(tmp_path.glob(".out*"))


def test_cli_run_validate_profiles(tmp_path):
    proc = fedsim_cli("validate", str(QUICKSTART), cwd=tmp_path)
    assert proc.returncode == 0 and "OK" in proc.stdout
    proc = fedsim_cli("profiles", cwd=tmp_path)
    assert proc.returncode == 0 and "rpi4" in proc.stdout and "wifi" in proc.stdout
    proc = fedsim_cli("run", str(QUICKSTART), "--set", "stop.max_rounds=2", "--out", "r",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "final accuracy" in proc.stdout
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {
        *RESULT_FILES,
        "run.json",
        "timings.json",
    }
    again = fedsim_cli("run", str(QUICKSTART), "--out", "r", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
