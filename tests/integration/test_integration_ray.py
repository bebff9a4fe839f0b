"""The Ray runtime on a real local Ray (2 CPUs): identical results, loud failures."""

import filecmp
import json

import pytest
import ray
from helpers import REPO

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.errors import RuntimeFailure

pytestmark = pytest.mark.ray
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# access networks small enough that concurrent transfers share them (contention binds)
CONTENDED = (
    "topology.edges.0.access_mbps.wifi.up=12",
    "topology.edges.0.access_mbps.wifi.down=20",
    "topology.edges.1.access_mbps.4g.up=6",
)


# offloading on: the home gateway (trusted) trains for its rpi3b, the mid phones choose the
# fastest plan, the low phones split their model with the operator edge
OFFLOADED = (
    "topology.edges.0.devices.1.offload.use=full",
    "topology.edges.1.devices.0.offload.use=fastest",
    "topology.edges.1.devices.1.offload.use=split",
    "topology.edges.1.devices.1.offload.params.k=1",
)


def scenario(*sets: str):
    base = ["stop.max_rounds=4", "rounds.cloud_every=1", *CONTENDED, *OFFLOADED, *sets]
    return load_scenario(QUICKSTART, base)


@pytest.mark.parametrize("vectorize", [False, True])
def test_inline_and_ray_1_2_4_workers_byte_identical(tmp_path, local_ray, vectorize):
    vec = f"runtime.vectorize={str(vectorize).lower()}"
    ref = run(scenario(vec), tmp_path / "inline")
    for workers in (1, 2, 4):
        res = run(
            scenario(vec, "runtime.kind=ray", f"runtime.workers={workers}"),
            tmp_path / f"w{workers}",
        )
        for f in FILES:
            assert filecmp.cmp(ref.path / f, res.path / f, shallow=False), (workers, f)
    assert ref.rounds["accuracy"].notna().all()
    assert (ref.device_rounds["up_shared_s"] > 0).any()  # sharing did slow transfers
    assert {"full", "split(1)"} <= set(ref.device_rounds["plan"])  # offloading ran


def test_hierarchical_rounds_identical_on_ray(tmp_path, local_ray):
    ref = run(scenario("rounds.cloud_every=2"), tmp_path / "inline")
    res = run(scenario("rounds.cloud_every=2", "runtime.kind=ray"), tmp_path / "ray")
    assert list(ref.rounds["version"]) == [0, 1, 1, 2]
    for f in FILES:
        assert filecmp.cmp(ref.path / f, res.path / f, shallow=False), f


def test_dead_device_host_is_a_clear_error(tmp_path, local_ray):
    from fedsim.prepare import check, device_partitions, make_runtime

    sc = scenario("runtime.kind=ray")
    prep = check(sc)
    runtime = make_runtime(prep, device_partitions(prep))
    try:
        runtime.train(0, 0, [0, 2, 4])
        ray.kill(runtime._hosts[0])
        handles = runtime.train(0, 1, [0, 2])
        runtime.aggregate_edge(0, handles)
        with pytest.raises(RuntimeFailure, match="device host 0 training 2 devices in round 1"):
            runtime.sync_cloud()
    finally:
        runtime.close()
    assert ray.is_initialized()  # a runtime never shuts down a Ray it did not start


def test_evaluation_read_a_round_late_gives_the_same_files(tmp_path, local_ray):
    # without a target accuracy the driver reads each evaluation after submitting the next
    # round (Ray evaluates while devices train); rows, UA and files must not change
    sets = ("stop.target_accuracy=null", "evaluation.every=1", "evaluation.ua=true")
    ref = run(scenario(*sets), tmp_path / "inline")
    res = run(scenario(*sets, "runtime.kind=ray"), tmp_path / "ray")
    for f in FILES:
        assert filecmp.cmp(ref.path / f, res.path / f, shallow=False), f
    assert list(res.rounds["round"]) == [0, 1, 2, 3]
    assert res.rounds["accuracy"].notna().all() and len(res.device_ua) == 4 * 30
    wall = json.loads((res.path / "timings.json").read_text())["wall_s_per_round"]
    assert len(wall) == 4 and all(w > 0 for w in wall)
