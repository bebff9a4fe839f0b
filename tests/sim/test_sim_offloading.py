"""Offloading on the clock: a hand-checked split round, edge queueing under contention, the
memory rule, and identical learning across policies."""

import dataclasses
import math

import numpy as np
import pytest
import simpy
import yaml
from conftest import device_profile, hand_scenario
from helpers import REPO

from fedsim.api import check, run
from fedsim.config import load_scenario, scenario_from_dict
from fedsim.models import build_model, describe, training_footprint_bytes
from fedsim.offload import FULL, split_at
from fedsim.offload.work import OffloadWork, SplitBatch, split_work
from fedsim.profiles import load_profiles
from fedsim.sim.costs import fixed_transfer
from fedsim.sim.device import Alone
from fedsim.sim.records import DevicePlan, Status
from fedsim.sim.sharing import SharedResource
from fedsim.sim.sync_round import run_round


class _Edge(Alone):
    """Unshared links; an edge compute of 1 GFLOP/s shared by the devices offloading to it."""

    def __init__(self, env):
        super().__init__(env, edge_flops_per_s=1e9)
        self.edge_compute = [SharedResource(env, 1e9)]


def _split_plan(device_id):
    # the device's part of the model: 2 MB each way; rtt 0.1 s; up 8 Mbps, down 16 Mbps.
    # batch 1: device 1.0 s forward; batch 2: 1.0 s backward of batch 1 + 0.5 s forward;
    # last backward 1.0 s. Each batch: 1 MB of activations up and gradients down, 2 GFLOP
    # on the edge.
    work = OffloadWork(
        split_at(1),
        (SplitBatch(1.0, 8e6, 2e9), SplitBatch(1.5, 8e6, 2e9)),
        device_tail_s=1.0,
        device_compute_s=3.5,
        model_fraction=0.5,
    )
    return DevicePlan(
        device_id, 0, 0.0, fixed_transfer(0.1, 2_000_000, 16.0), 0.0,
        fixed_transfer(0.1, 2_000_000, 8.0), math.inf, work=work,
    )  # fmt: skip


def _play(plans):
    env = simpy.Environment()
    proc = env.process(run_round(env, plans, len(plans), None, _Edge(env)))
    env.run(until=proc)
    return {o.plan.device_id: o for o in proc.value.outcomes}


def test_split_round_hand_checked():
    # model part down: 0.1 + 16 Mbit / 16 Mbps -> 1.1. Batch 1: device 1.0 + rtt 0.1 -> 2.2,
    # activations 8 Mbit / 8 Mbps -> 3.2, edge 2 GFLOP / 1 GFLOP/s -> 5.2, gradients
    # 8 Mbit / 16 Mbps -> 5.7. Batch 2: device 1.5 + rtt 0.1 -> 7.3, up -> 8.3, edge -> 10.3,
    # down -> 10.8. Last backward -> 11.8. Model part up: 0.1 + 16 Mbit / 8 Mbps -> 13.9.
    o = _play([_split_plan(0)])[0]
    assert o.status is Status.COMPLETED
    assert o.end_s == pytest.approx(13.9, abs=1e-9)
    assert o.download_s == pytest.approx(1.1, abs=1e-9)
    assert o.compute_s == pytest.approx(11.8 - 1.1, abs=1e-9)
    assert o.upload_s == pytest.approx(2.1, abs=1e-9)
    assert o.device_compute_s == pytest.approx(3.5, abs=1e-9)
    assert o.edge_compute_s == pytest.approx(4.0, abs=1e-9)
    assert o.edge_queue_s == pytest.approx(0.0, abs=1e-9)
    assert (o.act_bytes_up, o.act_bytes_down) == (2_000_000, 2_000_000)
    assert (o.bytes_up, o.bytes_down, o.data_bytes_up) == (2_000_000, 2_000_000, 0)
    assert o.plan_label == "split(1)" and not o.raw_data_left


def test_batches_in_one_step_take_the_same_time_alone():
    # merged: device 2.5 + 2 rtt -> 3.8, 16 Mbit up at 8 Mbps -> 5.8, 4 GFLOP -> 9.8,
    # 16 Mbit down at 16 Mbps -> 10.8, tail -> 11.8, model part up -> 13.9: as batch by batch
    plan = _split_plan(0)
    assert plan.work is not None
    work = dataclasses.replace(plan.work, batches=(SplitBatch(2.5, 16e6, 4e9, 2),))
    o = _play([dataclasses.replace(plan, work=work)])[0]
    ref = _play([plan])[0]
    assert o.end_s == pytest.approx(13.9, abs=1e-9)
    for field in ("download_s", "compute_s", "upload_s", "device_compute_s", "edge_compute_s",
                  "act_bytes_up", "act_bytes_down"):  # fmt: skip
        assert getattr(o, field) == pytest.approx(getattr(ref, field), abs=1e-9), field


@pytest.mark.parametrize("per_step", [2, 3, None])
def test_split_work_sums_batches_into_steps(per_step):
    # 7 batches (the last one short) of a real model: each step is its batches' sums
    prof = load_profiles()
    info = describe(build_model("perfit_3nn", (64,), 10), "perfit_3nn", (64,))
    args = (split_at(1), info, prof.device("rpi3b"), prof.device("home_gateway"), [20] * 6 + [7])
    one = split_work(*args, 1.3, 1)
    steps = split_work(*args, 1.3, per_step)
    size = per_step or 7
    assert [s.count for s in steps.batches] == [len(one.batches[i : i + size])
                                                for i in range(0, 7, size)]  # fmt: skip
    i = 0
    for s in steps.batches:
        part = one.batches[i : i + s.count]
        assert s.device_before_s == pytest.approx(sum(b.device_before_s for b in part), rel=1e-12)
        assert s.act_bits == sum(b.act_bits for b in part)
        assert s.edge_flops == pytest.approx(sum(b.edge_flops for b in part), rel=1e-12)
        i += s.count
    assert (steps.device_tail_s, steps.device_compute_s) == (one.device_tail_s,
                                                             one.device_compute_s)  # fmt: skip


def test_split_devices_queue_on_the_shared_edge():
    # two identical devices: their edge work overlaps exactly, each gets half the edge:
    # every edge step takes 4 s instead of 2 (2 s queued per batch), the round 4 s longer
    out = _play([_split_plan(0), _split_plan(1)])
    for o in out.values():
        assert o.end_s == pytest.approx(17.9, abs=1e-9)
        assert o.edge_compute_s == pytest.approx(8.0, abs=1e-9)
        assert o.edge_queue_s == pytest.approx(4.0, abs=1e-9)


def test_split_cut_by_the_close_counts_what_was_sent():
    env = simpy.Environment()
    proc = env.process(run_round(env, [_split_plan(0)], 1, 4.0, _Edge(env)))
    env.run(until=proc)
    o = proc.value.outcomes[0]
    # at 4.0 the first batch's activations are up (3.2) and the edge is working on them
    assert o.status is Status.STRAGGLER and o.end_s == 4.0
    assert o.act_bytes_up == 1_000_000 and o.act_bytes_down == 0
    assert o.edge_compute_s == pytest.approx(0.8, abs=1e-9)
    assert o.device_compute_s == pytest.approx(1.0, abs=1e-9)


# -- whole runs ---------------------------------------------------------------------------


def _scenario(n, offload, **extra):
    devices = [{"hardware": "fast", "link": "lan", "count": n}]
    sc = hand_scenario(
        "offload", 4, devices, data={"dataset": "digits", "samples_per_device": 40},
        offload=offload, stop={"max_rounds": 1},
    )  # fmt: skip
    sc.update(extra)
    return scenario_from_dict(sc, "offload.yaml")


def test_edge_queueing_grows_with_more_offloading_devices(tmp_path, fixed_profiles):
    queue = []
    for n in (1, 2, 4, 8):
        res = run(_scenario(n, {"use": "split", "params": {"k": 1}}), tmp_path / f"n{n}",
                  profiles_dir=fixed_profiles)  # fmt: skip
        d = res.device_rounds
        assert (d["plan"] == "split(1)").all() and (d["status"] == "completed").all()
        queue.append(float(d["edge_queue_s"].mean()))
    assert queue[0] == pytest.approx(0.0, abs=1e-12)
    assert all(b > a for a, b in zip(queue, queue[1:], strict=False)), queue


@pytest.mark.parametrize("contention", [False, True])
def test_batches_per_step_changes_only_the_sharing(tmp_path, fixed_profiles, contention):
    # 6 devices of different data sizes on one edge's 10 Mbps access network: batch by batch
    # or all in one step. Unshared,
    # the times are the same; shared, the step interleaves differently (times close, not
    # equal); the work, the bytes and the plans never change.
    out = {}
    for per_step in (1, "all"):
        split = {"use": "split", "params": {"k": 1}, "batches_per_step": per_step}
        raw = _scenario(6, split, network={"contention": contention}).model_dump(mode="json")
        raw["topology"]["edges"][0]["access_mbps"] = {"lan": {"up": 10.0, "down": 20.0}}
        raw["data"]["samples_sigma"] = 0.5
        sc = scenario_from_dict(raw, "offload.yaml")
        res = run(sc, tmp_path / f"{contention}-{per_step}", profiles_dir=fixed_profiles)
        out[per_step] = res.device_rounds.set_index("device_id").sort_index()
    one, alls = out[1], out["all"]
    for col in ("act_bytes_up", "act_bytes_down", "bytes_up", "bytes_down", "plan", "status"):
        assert one[col].tolist() == alls[col].tolist(), col
    assert np.allclose(one["energy_compute_j"], alls["energy_compute_j"], rtol=1e-12)
    if contention:
        assert not np.allclose(one["compute_s"], alls["compute_s"], rtol=1e-9, atol=0)
        # here (tiny compute, a busy link) one step per round shortens it by up to 26 %
        assert np.allclose(one["compute_s"], alls["compute_s"], rtol=0.3)
    else:
        assert np.allclose(one["compute_s"], alls["compute_s"], rtol=1e-12, atol=1e-12)


def test_memory_rule_offloads_a_device_that_cannot_train_locally(tmp_path, fixed_profiles):
    sc = _scenario(2, {"use": "local"})
    prep = check(sc, "offload.yaml", fixed_profiles)
    info = prep.model
    local = training_footprint_bytes(info, 20)
    part = training_footprint_bytes(info, 20, layers=1)
    assert part < local
    small = device_profile("small", "device", 1e9, 0.01)
    small["memory_bytes"]["value"] = (part + local) // 2  # holds split(1) only
    (fixed_profiles / "devices" / "small.yaml").write_text(yaml.safe_dump(small))
    raw = sc.model_dump(mode="json")
    raw["topology"]["edges"][0]["devices"].append({"hardware": "small", "link": "lan", "count": 2})
    res = run(
        scenario_from_dict(raw, "offload.yaml"), tmp_path / "mem", profiles_dir=fixed_profiles
    )
    d = res.device_rounds.set_index("device_id")
    assert list(d.loc[[0, 1], "plan"]) == ["local", "local"]
    assert list(d.loc[[2, 3], "plan"]) == ["split(1)", "split(1)"]  # the only plan that fits
    assert (d["status"] == "completed").all()
    assert res.rounds.loc[0, "offloaded"] == 2


def test_full_offload_ships_data_once(tmp_path, fixed_profiles):
    sc = _scenario(2, {"use": "full"}, stop={"max_rounds": 3})
    raw = sc.model_dump(mode="json")
    raw["topology"]["edges"][0]["trusted"] = True
    res = run(
        scenario_from_dict(raw, "offload.yaml"), tmp_path / "full", profiles_dir=fixed_profiles
    )
    d = res.device_rounds
    assert (d["plan"] == "full").all()
    first = d[d["round"] == 0]
    assert (first["data_bytes_up"] > 0).all() and first["raw_data_left"].all()
    assert (d[d["round"] > 0]["data_bytes_up"] == 0).all()  # the edge keeps the data
    assert (d[["bytes_up", "bytes_down", "act_bytes_up"]] == 0).all().all()
    assert (d["edge_compute_s"] > 0).all()


QUICKSTART_SAME = ["rounds.deadline_s=null", "rounds.over_selection=1.0", "stop.max_rounds=6",
                   "stop.target_accuracy=null", "availability.kind=always_on"]  # fmt: skip


def test_same_seed_no_deadline_same_accuracy_across_policies(tmp_path):
    # every selected device reports, so every policy aggregates the same updates: only time,
    # bytes and energy may differ
    runs = {}
    for name, sets in {
        "local": ["offload.use=local"],
        "split": ["offload.use=split", "offload.params.k=1"],
        "fastest": ["offload.use=fastest"],
        "energy": ["offload.use=energy"],
        "full_home": ["topology.edges.0.devices.0.offload.use=full"],
    }.items():
        sc = load_scenario(REPO / "scenarios" / "quickstart.yaml", [*QUICKSTART_SAME, *sets])
        runs[name] = run(sc, tmp_path / name)
    ref = runs["local"].rounds["accuracy"].to_numpy()
    assert np.isfinite(ref).all()
    for name, res in runs.items():
        assert res.rounds["accuracy"].to_numpy().tolist() == ref.tolist(), name
    times = {n: float(r.rounds["virtual_time_s"].iloc[-1]) for n, r in runs.items()}
    assert len(set(times.values())) > 1  # the time model did see the plans
    assert (runs["full_home"].device_rounds.query("edge_id == 0 and device_id < 10")["plan"]
            == "full").all()  # fmt: skip


def _full_plan(stay_online):
    # data: 0.1 s round trip + 8 Mbit at 8 Mbps -> 1.1; the edge: 4 GFLOP at 1 GFLOP/s -> 5.1.
    # The device goes off line at 3.0, while the edge trains for it.
    work = OffloadWork(FULL, data_bits=8e6, edge_flops=4e9, model_fraction=0.0)
    return DevicePlan(
        0, 0, 0.0, fixed_transfer(0.1, 0, 16.0), 0.0, fixed_transfer(0.1, 0, 8.0), 3.0,
        work=work, stay_online=stay_online,
    )  # fmt: skip


@pytest.mark.parametrize("stay_online", [True, False])
def test_full_offload_and_staying_on_line(stay_online):
    o = _play([_full_plan(stay_online)])[0]
    assert o.data_bytes_up == 1_000_000 and o.raw_data_left
    if stay_online:  # the work is lost with the device
        assert o.status is Status.DROPPED and o.end_s == 3.0
        assert o.edge_compute_s == pytest.approx(1.9, abs=1e-9)
    else:  # released after its upload: the edge finishes for it
        assert o.status is Status.COMPLETED
        assert o.end_s == pytest.approx(5.1, abs=1e-9)
        assert o.edge_compute_s == pytest.approx(4.0, abs=1e-9)
        assert o.idle_s == 0.0  # it spends nothing once released


def test_mnist_scenario_same_accuracy_local_and_offloaded(tmp_path):
    # the shipped MNIST scenario's settings (mtfl_2nn with BatchNorm, lr 0.3, B 20, C 0.5),
    # every selected device kept: local and split/full plans learn the same model per round
    from helpers import shared_data_dir

    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    base = [f"data.dir={data}", "stop.max_rounds=2", "stop.target_accuracy=null",
            "evaluation.ua=false"]  # fmt: skip
    scenario = REPO / "scenarios" / "mnist_2nn.yaml"
    ref = run(load_scenario(scenario, base), tmp_path / "local")
    off = run(
        load_scenario(scenario, [*base, "topology.edges.0.devices.0.offload.use=full",
                                 "topology.edges.0.devices.1.offload.use=split",
                                 "topology.edges.0.devices.1.offload.params.k=2"]),
        tmp_path / "offloaded",
    )  # fmt: skip
    assert set(off.device_rounds["plan"]) == {"full", "split(2)"}
    assert off.rounds["accuracy"].tolist() == ref.rounds["accuracy"].tolist()
    assert off.rounds["virtual_time_s"].iloc[-1] != ref.rounds["virtual_time_s"].iloc[-1]
