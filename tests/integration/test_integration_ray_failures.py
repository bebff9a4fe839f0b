"""A device-host actor killed mid-run on a real local Ray: ``on_failure: recover`` gives the
undisturbed results; ``fail`` stops with one line and keeps the finished rounds."""

import filecmp
import json
import os
import signal
from pathlib import Path

import pytest
import ray
from helpers import REPO

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.errors import RuntimeFailure

pytestmark = pytest.mark.ray
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
BASE = ("stop.max_rounds=5", "stop.target_accuracy=null", "rounds.cloud_every=2")


def _host_pids():
    """Return the process ids of the running device-host actors (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::DeviceHostActor"):
                pids.append(int(entry.name))
    return sorted(pids)


def _kill_a_host_after(round_index):
    def on_round(row):
        if row["round"] == round_index:
            pids = _host_pids()
            assert pids, "no device-host actor process found"
            os.kill(pids[0], signal.SIGKILL)

    return on_round


@pytest.fixture
def ray_shutdown():
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_recover_gives_the_undisturbed_results(tmp_path, ray_shutdown):
    ref = run(load_scenario(QUICKSTART, list(BASE)), tmp_path / "inline")
    sc = load_scenario(QUICKSTART, [*BASE, "runtime.kind=ray", "runtime.workers=2",
                                    "runtime.on_failure=recover"])  # fmt: skip
    res = run(sc, tmp_path / "ray", on_round=_kill_a_host_after(1))
    for f in FILES:
        assert filecmp.cmp(ref.path / f, res.path / f, shallow=False), f
    failures = json.loads((res.path / "timings.json").read_text())["runtime_failures"]
    assert len(failures) == 1 and "died" in failures[0] and "restarted" in failures[0]
    assert (res.rounds["dropped"] == ref.rounds["dropped"]).all()  # not a simulated drop-out


def test_fail_stops_with_one_line_and_keeps_the_finished_rounds(tmp_path, ray_shutdown):
    sc = load_scenario(QUICKSTART, [*BASE, "runtime.kind=ray", "runtime.workers=2"])
    with pytest.raises(RuntimeFailure) as exc:
        run(sc, tmp_path / "ray", on_round=_kill_a_host_after(1))
    message = str(exc.value)
    assert "\n" not in message and "device host" in message and "died" in message
    rows = (tmp_path / "ray" / "rounds.csv").read_text().splitlines()
    assert len(rows) >= 3  # the header and rounds 0 and 1, written before the kill
    assert not (tmp_path / "ray" / "run.json").exists()


def test_async_run_stops_when_a_host_dies_instead_of_going_on_without_its_updates(
    tmp_path, ray_shutdown
):
    # A server step whose update died with its host never runs, and the actor's later
    # steps would run without it: the run must stop (the step's acknowledgement, or the
    # next evaluation, which every device host takes part in, says the host died).
    sets = [
        "rounds={kind: async, concurrency: 8, server: {kind: fedasync, alpha: 0.5}}",
        "stop.max_rounds=300", "stop.target_accuracy=null", "evaluation.every=20",
        "runtime.kind=ray", "runtime.workers=2",
    ]  # fmt: skip
    with pytest.raises(RuntimeFailure) as exc:
        run(load_scenario(QUICKSTART, sets), tmp_path / "ray", on_round=_kill_a_host_after(40))
    message = str(exc.value)
    assert "\n" not in message and "died" in message
    assert not (tmp_path / "ray" / "run.json").exists()
