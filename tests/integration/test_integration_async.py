"""Asynchronous runs on a real local Ray: byte-identical to inline at 1, 2 and 4 workers, and
the device hosts really train at the same time."""

import filecmp
import json

import pytest
import ray
from helpers import REPO

from fedsim.api import run
from fedsim.config import load_scenario

pytestmark = pytest.mark.ray
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv", "updates.csv")
# the quickstart's on/off availability, contended links and two edges, with a deadline
FEDBUFF_EDGES = (
    "rounds={kind: async, concurrency: 8, deadline_s: 1.5, max_staleness: 6,"
    " server: {kind: fedasync, alpha: 0.5, staleness: {kind: hinge, a: 1.0, b: 2}},"
    " edges: {kind: fedbuff, buffer_size: 3, server_lr: 1.0}}",
    "stop.max_rounds=25", "stop.target_accuracy=null", "evaluation.every=5",
)  # fmt: skip
# with offloading: the gateway trains for its rpi3b (full), the phones split
FEDASYNC = (
    "rounds={kind: async, concurrency: 6, server: {kind: fedasync, alpha: 0.6,"
    " staleness: {kind: polynomial, a: 0.5}}}",
    "stop.max_rounds=40", "stop.target_accuracy=null", "evaluation.every=10",
    "topology.edges.0.devices.1.offload.use=full",
    "topology.edges.1.devices.0.offload.use=split",
    "topology.edges.1.devices.0.offload.params.k=1",
)  # fmt: skip


@pytest.fixture
def ray_shutdown():
    yield
    if ray.is_initialized():
        ray.shutdown()


def _same(a, b):
    for f in FILES:
        assert filecmp.cmp(a / f, b / f, shallow=False), f


@pytest.fixture(scope="module")
def hierarchy_inline(tmp_path_factory):
    sc = load_scenario(QUICKSTART, list(FEDBUFF_EDGES))
    return run(sc, tmp_path_factory.mktemp("async") / "inline")


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_async_hierarchy_is_byte_identical_inline_and_on_ray(
    tmp_path, ray_shutdown, hierarchy_inline, workers
):
    ref = hierarchy_inline
    fates = set(ref.updates["fate"])
    assert {"applied", "timed_out"} <= fates
    assert (ref.updates["source"] == "edge").any()  # edges forwarded to the cloud
    sc = load_scenario(
        QUICKSTART, [*FEDBUFF_EDGES, "runtime.kind=ray", f"runtime.workers={workers}"]
    )
    _same(ref.path, run(sc, tmp_path / f"ray{workers}").path)


def test_fedasync_on_ray_overlaps_trainings_across_hosts(tmp_path, ray_shutdown):
    ref = run(load_scenario(QUICKSTART, list(FEDASYNC)), tmp_path / "inline")
    sc = load_scenario(QUICKSTART, [*FEDASYNC, "runtime.kind=ray", "runtime.workers=2"])
    res = run(sc, tmp_path / "ray")
    _same(ref.path, res.path)
    assert {"full", "split(1)"} <= set(ref.device_rounds["plan"])
    busy = json.loads((res.path / "timings.json").read_text())["host_busy_s"]
    hosts = {h for h, _, _ in busy}
    assert hosts == {0, 1}
    overlap = [
        (a, b)
        for a in busy
        for b in busy
        if a[0] == 0 and b[0] == 1 and min(a[2], b[2]) > max(a[1], b[1])
    ]
    assert overlap, "the two device hosts never trained at the same time"
