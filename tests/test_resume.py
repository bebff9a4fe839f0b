"""Streaming results, checkpoints and resume: a killed run keeps its finished rounds, and a
resumed run writes the same files, byte for byte, as one never interrupted."""

import filecmp
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ray
from helpers import REPO, cut_and_resume, sigint_default

from fedsim import checkpoint
from fedsim.api import resume, run
from fedsim.checkpoint import Checkpoint, LoopState
from fedsim.config import load_scenario
from fedsim.errors import InputError
from fedsim.runtime.ray_setup import start_ray

QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv", "run.json")

# two edges synced by the cloud every 3 rounds (edge models and weights live across
# rounds), the gateway training for its rpi3b (the edge keeps their data), the phones
# choosing by history-free estimates and splitting
HIERARCHICAL = (
    "stop.max_rounds=10", "stop.target_accuracy=null", "rounds.cloud_every=3",
    "topology.edges.0.devices.1.offload.use=full",
    "topology.edges.1.devices.0.offload.use=fastest",
    "topology.edges.1.devices.1.offload.use=split", "topology.edges.1.devices.1.offload.params.k=1",
    "checkpoint.every_rounds=2",
)  # fmt: skip


class Crash(Exception):
    pass


def _crash_after(rounds):
    def on_round(row):
        if row["round"] + 1 == rounds:
            raise Crash

    return on_round


def _same_files(a, b, names=FILES):
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


@pytest.mark.parametrize("crash_after", [1, 5, 8])
def test_resume_after_a_crash_is_byte_identical(tmp_path, crash_after):
    sc = load_scenario(QUICKSTART, list(HIERARCHICAL))
    ref = run(sc, tmp_path / "ref")
    with pytest.raises(Crash):
        run(sc, tmp_path / "cut", on_round=_crash_after(crash_after))
    cut = tmp_path / "cut"
    assert not (cut / "run.json").exists() and (cut / "run.partial.json").is_file()
    rows = (cut / "rounds.csv").read_text().splitlines()
    assert len(rows) == 1 + crash_after  # every finished round is on disk
    # the crash comes with the row, before that boundary's checkpoint
    assert checkpoint.next_round(cut) == ((crash_after - 1) // 2) * 2
    res = resume(cut)
    _same_files(ref.path, res.path)
    assert not list(cut.glob("checkpoint*")) and not (cut / "run.partial.json").exists()
    assert set(ref.device_rounds["plan"]) >= {"full", "split(1)"}


@pytest.mark.parametrize(
    "variant",
    [
        # measured traces (a transfer follows its bandwidth trace across rounds)
        (
            "traces.bandwidth=traces/quickstart_bandwidth.csv",
            "traces.availability=traces/quickstart_availability.csv",
        ),
        # evaluations every 2 versions; the deadline cuts stragglers; instant detection
        ("evaluation.every=2", "rounds.deadline_s=0.5", "rounds.failure_detection.kind=instant"),
        # stop on virtual time, contention off, a fixed split with coarse steps
        (
            "stop.max_rounds=40",
            "stop.max_virtual_s=7.0",
            "network.contention=false",
            "offload.use=split",
            "offload.params.k=1",
            "offload.batches_per_step=all",
        ),
    ],
    ids=["traces", "every-2-deadline", "virtual-stop-split"],
)
def test_resume_matrix(tmp_path, variant):
    sets = ["stop.max_rounds=8", "stop.target_accuracy=null", "checkpoint.every_rounds=3",
            *variant]  # fmt: skip
    sc = load_scenario(QUICKSTART, sets)
    ref = run(sc, tmp_path / "ref", source=str(QUICKSTART))
    assert ref.summary["rounds"] >= 5, ref.summary
    with pytest.raises(Crash):
        run(sc, tmp_path / "cut", on_round=_crash_after(5), source=str(QUICKSTART))
    _same_files(ref.path, resume(tmp_path / "cut").path)


def test_resume_on_ray_is_byte_identical_to_inline(tmp_path):
    sets = [*HIERARCHICAL, "stop.max_rounds=6"]
    ref = run(load_scenario(QUICKSTART, sets), tmp_path / "inline")
    sc = load_scenario(QUICKSTART, [*sets, "runtime.kind=ray", "runtime.workers=2"])
    try:
        start_ray(sc.runtime)  # one Ray for the cut run and its resume (its own actors each)
        res = cut_and_resume(sc, tmp_path / "ray", 2)  # a crash after the third round
    finally:
        if ray.is_initialized():
            ray.shutdown()
    _same_files(ref.path, res.path, FILES[:3])  # run.json names the runtime


def test_systems_only_run_resumes(tmp_path):
    sets = ["learning=false", "data.samples_per_device=40", "stop.max_rounds=7",
            "stop.target_accuracy=null", "checkpoint.every_rounds=3"]  # fmt: skip
    sc = load_scenario(QUICKSTART, sets)
    ref = run(sc, tmp_path / "ref")
    with pytest.raises(Crash):
        run(sc, tmp_path / "cut", on_round=_crash_after(5))
    _same_files(ref.path, resume(tmp_path / "cut").path)


def test_a_run_without_checkpoint_resumes_from_the_start(tmp_path):
    sc = load_scenario(QUICKSTART, ["stop.max_rounds=3", "checkpoint.enabled=false"])
    ref = run(sc, tmp_path / "ref")
    with pytest.raises(Crash):
        run(sc, tmp_path / "cut", on_round=_crash_after(2))
    assert checkpoint.next_round(tmp_path / "cut") == 0
    _same_files(ref.path, resume(tmp_path / "cut").path)


def test_resume_refuses_complete_and_foreign_folders(tmp_path):
    done = run(load_scenario(QUICKSTART, ["stop.max_rounds=1"]), tmp_path / "done")
    with pytest.raises(InputError, match="the run is complete"):
        resume(done.path)
    with pytest.raises(InputError, match="not an unfinished run folder"):
        resume(tmp_path)


def test_two_runs_never_share_a_folder(tmp_path):
    sc = load_scenario(QUICKSTART, ["stop.max_rounds=1"])
    run(sc, tmp_path / "one")
    with pytest.raises(InputError, match="already exists"):
        run(sc, tmp_path / "one")


def _ckpt(next_round):
    return Checkpoint(LoopState(next_round, next_round, -1), 1.5, [], [0], [], {}, {}, {})


def test_a_kill_while_a_checkpoint_is_written_leaves_the_previous_one(tmp_path, monkeypatch):
    import torch

    checkpoint.save(tmp_path, _ckpt(2), {"w": torch.ones(3)})

    def killed(path, data):
        raise KeyboardInterrupt  # after the new model file, before the new index

    monkeypatch.setattr(checkpoint, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, _ckpt(4), {"w": torch.zeros(3)})
    (tmp_path / ".checkpoint.json.tmp").write_text('{"half": ')  # a torn temporary file
    got = checkpoint.load(tmp_path)
    assert got is not None
    ckpt, models = got
    assert ckpt.loop.next_round == 2 and torch.equal(models["w"], torch.ones(3))


def test_an_altered_checkpoint_is_refused(tmp_path):
    import torch

    checkpoint.save(tmp_path, _ckpt(2), {"w": torch.ones(3)})
    model = tmp_path / "checkpoint-2.pt"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(InputError, match="missing or altered"):
        checkpoint.load(tmp_path)
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    index["format_version"] = 99
    (tmp_path / "checkpoint.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="format_version"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_cli_run_resumes_byte_identical(tmp_path, how):
    # a real `fedsim run` process (started in the repository, the scenario named by a
    # relative path, with traces relative to it), killed once it has written 25 rounds,
    # then `fedsim resume` from another folder
    sets = ["--set", "stop.max_rounds=60", "--set", "stop.target_accuracy=null",
            "--set", "checkpoint.every_rounds=4",
            "--set", "traces.bandwidth=traces/quickstart_bandwidth.csv"]  # fmt: skip
    cli = [sys.executable, "-m", "fedsim"]
    scenario = "scenarios/quickstart.yaml"
    ref = tmp_path / "ref"
    subprocess.run([*cli, "run", scenario, "--out", str(ref), "--quiet", *sets],
                   check=True, capture_output=True, cwd=REPO)  # fmt: skip
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*cli, "run", scenario, "--out", str(cut), "--quiet", *sets],
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            preexec_fn=sigint_default)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        table = cut / "rounds.csv"
        if table.is_file() and len(table.read_text().splitlines()) > 25:
            break
        time.sleep(0.02)
    os.kill(proc.pid, how)
    _, err = proc.communicate(timeout=60)
    assert not (cut / "run.json").exists(), "the run ended before it was killed"
    if how != signal.SIGKILL:  # stops after its round, with a checkpoint there; no trace
        assert proc.returncode == 130
        assert f"fedsim resume {cut}" in err and "Traceback" not in err
        rows = len((cut / "rounds.csv").read_text().splitlines()) - 1
        assert checkpoint.next_round(cut) == rows
    done = subprocess.run([*cli, "resume", str(cut), "--quiet"], capture_output=True, text=True,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    _same_files(ref, cut)


# asynchronous runs resume by replaying the clock to the checkpoint's version row, where the
# checkpoint's models (servers, bases of the updates on their way, edges' cloud models)
# take over and the trainings in flight are redone from their bases
ASYNC_FLAT = (
    "rounds={kind: async, concurrency: 6, deadline_s: 1.5, max_staleness: 5,"
    " server: {kind: fedasync, alpha: 0.6, staleness: {kind: polynomial, a: 0.5}}}",
    "stop.max_rounds=30", "stop.target_accuracy=null", "evaluation.every=4",
    "checkpoint.every_rounds=7", "topology.edges.1.devices.1.offload.use=split",
    "topology.edges.1.devices.1.offload.params.k=1",
)  # fmt: skip
ASYNC_EDGES = (
    "rounds={kind: async, concurrency: 8, server: {kind: fedbuff, buffer_size: 2},"
    " edges: {kind: fedbuff, buffer_size: 3, server_lr: 1.0}}",
    "stop.max_rounds=16", "stop.target_accuracy=null", "evaluation.every=3",
    "checkpoint.every_rounds=5",
)  # fmt: skip


@pytest.mark.parametrize("sets", [ASYNC_FLAT, ASYNC_EDGES], ids=["fedasync", "fedbuff-edges"])
def test_async_resume_is_byte_identical(tmp_path, sets):
    sc = load_scenario(QUICKSTART, list(sets))
    ref = run(sc, tmp_path / "ref")
    with pytest.raises(Crash):
        run(sc, tmp_path / "cut", on_round=_crash_after(12))
    assert checkpoint.next_round(tmp_path / "cut") >= 5
    res = resume(tmp_path / "cut")
    _same_files(ref.path, res.path, (*FILES, "updates.csv"))


def test_async_resume_on_ray_is_byte_identical_to_inline(tmp_path):
    sc = load_scenario(QUICKSTART, list(ASYNC_EDGES))
    ref = run(sc, tmp_path / "ref")
    ray_sc = load_scenario(QUICKSTART, [*ASYNC_EDGES, "runtime.kind=ray", "runtime.workers=2"])
    try:
        start_ray(ray_sc.runtime)  # one Ray for the cut run and its resume
        res = cut_and_resume(ray_sc, tmp_path / "cut", 11)  # a crash after the 12th row
    finally:
        if ray.is_initialized():
            ray.shutdown()
    _same_files(ref.path, res.path, (*FILES[:3], "updates.csv"))
