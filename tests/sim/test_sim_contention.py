"""Shared links and edges in whole rounds: hand-computed sharing, drop-out and failure
detection, linear growth once capacity binds, hierarchy accounting, idle energy, oom."""

import math

import pytest
import simpy
import yaml
from conftest import device_profile

from fedsim.api import check, run
from fedsim.config import scenario_from_dict
from fedsim.sim.costs import fixed_transfer
from fedsim.sim.device import Alone
from fedsim.sim.sharing import SharedResource
from fedsim.sim.sync_round import DevicePlan, Status, run_round

MODEL_BYTES = (64 * 32 + 32 + 32 * 10 + 10) * 4  # digits_mlp, float32
NUM_PARAMS = MODEL_BYTES // 4


class _Uplink(Alone):
    """Links with one shared uplink of ``capacity`` bits/s; downloads unshared."""

    def __init__(self, env, capacity):
        super().__init__(env)
        self.up = SharedResource(env, capacity)

    def access(self, group, up):
        return self.up if up else super().access(group, up)


def _plan(device_id, compute_s, up_bytes, up_mbps, offline_at_s=math.inf):
    return DevicePlan(
        device_id, 0, 0.0, fixed_transfer(0.0, 0, 1.0), compute_s,
        fixed_transfer(0.0, up_bytes, up_mbps), offline_at_s,
    )  # fmt: skip


def _staggered(detect_s):
    # uplink 10 Mbps. A: 12 Mbit at most 6 Mbps from 0; B: 4 Mbit at 2 Mbps from 1;
    # C: 10 Mbit at 8 Mbps from 1.5, off line at 2.0. Hand-computed: 0-1 A alone at 6;
    # 1-1.5 A 6 + B 2 fit; 1.5-2 caps 16 > 10: B keeps 2, A and C get 4 each; C drops at 2
    # having sent 0.5 s x 4 Mbps = 2 Mbit; A (3 - 2 = 1 Mbit left) at 6 ends 2 + 1/6;
    # B (3 - 1 = 2 Mbit left at 2) ends 3.0.
    env = simpy.Environment()
    plans = [
        _plan(0, 0.0, 1_500_000, 6.0),
        _plan(1, 1.0, 500_000, 2.0),
        _plan(2, 1.5, 1_250_000, 8.0, offline_at_s=2.0),
    ]
    proc = env.process(run_round(env, plans, 3, None, _Uplink(env, 10e6), None, detect_s))
    env.run(until=proc)
    return {o.plan.device_id: o for o in proc.value.outcomes}, proc.value


def test_three_devices_share_an_uplink_hand_computed():
    out, timing = _staggered(detect_s=0.0)
    a, b, c = out[0], out[1], out[2]
    assert a.status is Status.COMPLETED and b.status is Status.COMPLETED
    assert c.status is Status.DROPPED
    assert a.end_s == pytest.approx(2.0 + 1.0 / 6.0, abs=1e-9)
    assert b.end_s == pytest.approx(3.0, abs=1e-9)
    assert c.end_s == 2.0
    assert (a.bytes_up, b.bytes_up, c.bytes_up) == (1_500_000, 500_000, 250_000)
    assert a.upload_s == pytest.approx(2.0 + 1.0 / 6.0, abs=1e-9)
    assert c.upload_s == pytest.approx(0.5, abs=1e-9)
    # seconds lost to sharing: A 0.5 s at 4 of its 6 Mbps, C 0.5 s at 4 of 8, B none
    assert a.up_shared_s == pytest.approx(0.5 / 3.0, abs=1e-9)
    assert b.up_shared_s == pytest.approx(0.0, abs=1e-9)
    assert c.up_shared_s == pytest.approx(0.25, abs=1e-9)
    # instant failure detection: the round closes with the last report
    assert timing.close_s == pytest.approx(3.0, abs=1e-9)
    assert a.wait_s == pytest.approx(3.0 - (2.0 + 1.0 / 6.0), abs=1e-9)


def test_failure_detection_timeout_holds_the_round_open():
    out, timing = _staggered(detect_s=5.0)
    # the server notices C's drop-out 5 s after it: the round closes at 7.0
    assert timing.close_s == pytest.approx(7.0, abs=1e-9)
    assert out[2].status is Status.DROPPED and out[2].end_s == 2.0
    assert out[1].wait_s == pytest.approx(4.0, abs=1e-9)
    assert out[0].end_s == pytest.approx(2.0 + 1.0 / 6.0, abs=1e-9)  # same transfers


# -- whole runs on fixed profiles ---------------------------------------------------------


def _base(profiles_edges, **extra):
    sc = {
        "name": "contention",
        "seed": 3,
        "data": {"dataset": "digits", "samples_per_device": 40},
        "model": "digits_mlp",
        "topology": {"cloud": {"hardware": "cld", "backhaul": "bh"}, "edges": profiles_edges},
        "algorithm": {"use": "fedavg", "params": {"lr": 0.1, "local_epochs": 1, "batch_size": 20}},
        "rounds": {"failure_detection": {"kind": "instant"}},
        "stop": {"max_rounds": 1},
        "learning": False,
    }
    sc.update(extra)
    return scenario_from_dict(sc, "contention.yaml")


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_upload_phase_grows_linearly_once_capacity_binds(tmp_path, fixed_profiles, n):
    # each device uploads at most 8 Mbps (link "lan"); the edge's uplink carries 32 Mbps:
    # up to 4 devices upload at their own rate, beyond that the phase takes n x bits / 32M
    edges = [
        {
            "name": "e0", "hardware": "srv", "backhaul": "bh",
            "access_mbps": {"lan": {"up": 32.0, "down": 1e6}},
            "devices": [{"hardware": "fast", "link": "lan", "count": n}],
        }
    ]  # fmt: skip
    res = run(_base(edges), tmp_path / f"n{n}", profiles_dir=fixed_profiles)
    rows = res.device_rounds
    bits = MODEL_BYTES * 8
    expected = 0.010 + bits / min(8e6, 32e6 / n)
    assert rows["upload_s"].to_numpy() == pytest.approx([expected] * n, rel=1e-9)
    shared = rows["up_shared_s"].to_numpy()
    assert shared == pytest.approx([max(0.0, n * bits / 32e6 - bits / 8e6)] * n, abs=1e-9)
    assert rows["up_mbps"].to_numpy() == pytest.approx([min(8.0, 32.0 / n)] * n, rel=1e-9)


def _two_edges(tmp_path, fixed_profiles, cloud_every, rounds):
    """Edge e0: 2 fast devices and 1 snail, a straggler (rounds last the 4 s deadline);
    edge e1: 2 fast devices on line in [0, 3.9) and from 11.5 s (off in rounds 1 and 2)."""
    snail = device_profile("snail", "device", 1e3, 0.01)  # never makes the deadline
    (fixed_profiles / "devices" / "snail.yaml").write_text(yaml.safe_dump(snail))
    trace = tmp_path / "avail.csv"
    trace.write_text("device,on_s,off_s\ne1/0,0,3.9\ne1/0,11.5,inf\n")
    edges = [
        {
            "name": "e0", "hardware": "srv", "backhaul": "bh",
            "devices": [
                {"hardware": "fast", "link": "lan", "count": 2},
                {"hardware": "snail", "link": "lan", "count": 1},
            ],
        },
        {
            "name": "e1", "hardware": "srv", "backhaul": "bh",
            "devices": [{"hardware": "fast", "link": "lan", "count": 2}],
        },
    ]  # fmt: skip
    sc = _base(
        edges,
        rounds={"deadline_s": 4.0, "cloud_every": cloud_every},
        stop={"max_rounds": rounds},
        traces={"availability": str(trace)},
    )
    return run(sc, tmp_path / "out", profiles_dir=fixed_profiles)


def _backhaul_s(nbytes):
    return 0.020 + nbytes * 8 / 80e6


def test_hierarchy_every_pending_edge_uploads_at_sync(tmp_path, fixed_profiles):
    res = _two_edges(tmp_path, fixed_profiles, cloud_every=2, rounds=4)
    r = res.rounds.set_index("round")
    d = res.device_rounds
    # round 1 is the sync; e1 has no devices in it, but aggregated in round 0: it uploads
    assert set(d[d["round"] == 1]["edge_id"]) == {0}
    assert r.loc[1, "version"] == 1
    devices_up = d[d["round"] == 1]["bytes_up"].sum()
    assert r.loc[1, "bytes_up"] == devices_up + 2 * MODEL_BYTES
    # the cloud aggregates the two models it received
    assert r.loc[1, "cloud_s"] == pytest.approx(2 * NUM_PARAMS * 2 / 1e11, rel=1e-9)
    # e1's upload alone: its backhaul transfer; e0 aggregates 2 updates, then uploads
    assert r.loc[1, "edge_s"] == pytest.approx(
        2 * NUM_PARAMS * 2 / 1e10 + _backhaul_s(MODEL_BYTES), rel=1e-9
    )
    # no sync in round 0: no backhaul upload, no cloud time
    assert r.loc[0, "bytes_up"] == d[d["round"] == 0]["bytes_up"].sum()
    assert r.loc[0, "cloud_s"] == 0.0


def test_hierarchy_edge_fetches_before_first_use_after_a_sync(tmp_path, fixed_profiles):
    res = _two_edges(tmp_path, fixed_profiles, cloud_every=2, rounds=4)
    r = res.rounds.set_index("round")
    d = res.device_rounds
    fetch = _backhaul_s(MODEL_BYTES)
    # round 2 follows the sync: e0 fetches; e1 is off line
    r2 = d[d["round"] == 2]
    assert set(r2["edge_id"]) == {0}
    assert r2["fetch_s"].to_numpy() == pytest.approx([fetch] * len(r2), rel=1e-9)
    # round 3 (3 % 2 != 0) is e1's first use since the sync: it fetches; e0 does not again
    r3 = d[d["round"] == 3]
    assert set(r3["edge_id"]) == {0, 1}
    assert (r3[r3["edge_id"] == 0]["fetch_s"] == 0.0).all()
    assert r3[r3["edge_id"] == 1]["fetch_s"].to_numpy() == pytest.approx([fetch] * 2, rel=1e-9)
    assert r.loc[3, "bytes_down"] == r3["bytes_down"].sum() + MODEL_BYTES


def test_cloud_time_counts_the_models_aggregated(tmp_path, fixed_profiles):
    res = _two_edges(tmp_path, fixed_profiles, cloud_every=1, rounds=2)
    r = res.rounds.set_index("round")
    assert r.loc[0, "cloud_s"] == pytest.approx(2 * NUM_PARAMS * 2 / 1e11, rel=1e-9)
    assert r.loc[1, "cloud_s"] == pytest.approx(2 * NUM_PARAMS * 1 / 1e11, rel=1e-9)


def test_idle_energy_and_energy_by_kind(tmp_path, fixed_profiles):
    res = _two_edges(tmp_path, fixed_profiles, cloud_every=1, rounds=2)
    d = res.device_rounds
    # fixture powers: compute 5 W, transmit 2 W, receive 1 W, idle 0.5 W
    idle = 0.5 * (d["fetch_s"] + d["wait_s"])
    assert d["energy_idle_j"].to_numpy() == pytest.approx(idle.to_numpy(), rel=1e-12)
    radio = 1.0 * (d["download_s"] - d["fetch_s"]) + 2.0 * d["upload_s"]
    assert d["energy_radio_j"].to_numpy() == pytest.approx(radio.to_numpy(), rel=1e-9)
    assert d["energy_compute_j"].to_numpy() == pytest.approx(5.0 * d["compute_s"], rel=1e-12)
    total = d["energy_compute_j"] + d["energy_radio_j"] + d["energy_idle_j"]
    assert d["energy_j"].to_numpy() == pytest.approx(total.to_numpy(), rel=1e-12)
    done = d[d["status"] == "completed"]
    assert (done["wait_s"] > 0).all() and (done["energy_idle_j"] > 0).all()
    r = res.rounds
    assert r["energy_idle_j"].to_numpy() == pytest.approx(
        d.groupby("round")["energy_idle_j"].sum().to_numpy(), rel=1e-12
    )


def test_breakdown_identity_holds_with_contention(tmp_path, fixed_profiles):
    res = _two_edges(tmp_path, fixed_profiles, cloud_every=2, rounds=4)
    for _, r in res.rounds.iterrows():
        parts = r[["download_s", "compute_s", "upload_s", "wait_s", "edge_s", "cloud_s"]].sum()
        assert parts == pytest.approx(r["virtual_time_s"] - r["round_start_s"], rel=1e-12)


def test_device_without_memory_is_oom_and_never_trains(tmp_path, fixed_profiles):
    tiny = device_profile("tiny", "device", 1e9, 0.01)
    tiny["memory_bytes"]["value"] = 1000
    (fixed_profiles / "devices" / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    edges = [
        {
            "name": "e0", "hardware": "srv", "backhaul": "bh",
            "devices": [
                {"hardware": "fast", "link": "lan", "count": 2},
                {"hardware": "tiny", "link": "lan", "count": 2},
            ],
        }
    ]  # fmt: skip
    sc = _base(edges, learning=True, data={"dataset": "digits"}, stop={"max_rounds": 2})
    warnings = check(sc, "oom.yaml", fixed_profiles).warnings()  # what `validate` prints
    assert len(warnings) == 1
    assert warnings[0].startswith("oom.yaml: topology.edges[0].devices[1]: tiny has 1,000 bytes")
    res = run(sc, tmp_path / "oom", profiles_dir=fixed_profiles)
    d = res.device_rounds
    oom = d[d["device_id"] >= 2]
    assert (oom["status"] == "oom").all()
    assert (oom[["bytes_up", "bytes_down", "compute_s", "energy_j"]] == 0).all().all()
    assert (d[d["device_id"] < 2]["status"] == "completed").all()
    assert list(res.rounds["oom"]) == [2, 2]
    assert list(res.rounds["completed"]) == [2, 2]
    assert res.rounds["accuracy"].notna().all()  # the others trained and were aggregated


def test_traced_device_follows_its_trace_during_a_transfer(tmp_path, fixed_profiles):
    # device 0's uplink: 8 Mbps until t = 1 s, then 2 Mbps. A 1.5 MB (12 Mbit) upload from
    # t = 0 sends 8 Mbit in the first second, the last 4 Mbit at 2 Mbps: it ends at 3.0
    from fedsim.profiles import load_profiles
    from fedsim.sim.network import Network
    from fedsim.sim.population import Population
    from fedsim.sim.traces import load_bandwidth_trace

    csv = tmp_path / "bw.csv"
    csv.write_text("device,time_s,up_mbps,down_mbps\n0,0,8,8\n0,1,2,2\n")
    edges = [
        {
            "name": "e0", "hardware": "srv", "backhaul": "bh",
            "devices": [{"hardware": "fast", "link": "lan", "count": 2}],
        }
    ]  # fmt: skip
    sc = _base(edges)
    population = Population.from_topology(sc.topology)
    env = simpy.Environment()
    net = Network(
        env, sc, load_profiles(fixed_profiles), population, load_bandwidth_trace(csv, population)
    )
    t = fixed_transfer(0.0, 1_500_000, 100.0)  # the drawn rate is ignored for device 0
    traced = net.start_bits(net.access(0, True), t.bits, t.cap_bps, 0, up=True)
    drawn = net.start_bits(net.access(0, True), t.bits, t.cap_bps, 1, up=True)
    env.run()
    assert traced.end_s == pytest.approx(3.0, abs=1e-9)
    assert drawn.end_s == pytest.approx(0.12, abs=1e-9)


def test_quickstart_with_the_example_traces(tmp_path):
    from helpers import REPO

    res = run(
        REPO / "scenarios" / "quickstart.yaml", tmp_path / "q",
        [
            "traces.bandwidth=traces/quickstart_bandwidth.csv",
            "traces.availability=traces/quickstart_availability.csv",
            "stop.max_rounds=40", "stop.target_accuracy=null", "learning=false",
        ],
    )  # fmt: skip
    d = res.device_rounds
    assert res.rounds["virtual_time_s"].iloc[-1] > 30
    # device 15's 4G drops to 0.2 Mbps up in [10, 18) (a tunnel), else 5.439 Mbps
    phone = d[(d["device_id"] == 15) & (d["bytes_up"] > 0)]
    tunnel = (phone["start_s"] >= 10) & (phone["end_s"] < 18)
    assert tunnel.any() and (~tunnel).any()
    assert (phone[tunnel]["up_mbps"] <= 0.2 + 1e-9).all()
    assert (phone[~tunnel & (phone["start_s"] < 10)]["up_mbps"] <= 5.439 + 1e-9).all()
    assert (phone["up_mbps"] > 0.19).all()
    # device 20 is on line in [5, 15) and from 25 s: it is only ever selected then
    starts = d[d["device_id"] == 20]["start_s"]
    assert len(starts) > 3
    assert (((starts >= 5) & (starts < 15)) | (starts >= 25)).all()
    # device 16 is off line in [6, 9) and [30, 40)
    starts = d[d["device_id"] == 16]["start_s"]
    assert len(starts) > 3
    assert not (((starts >= 6) & (starts < 9)) | ((starts >= 30) & (starts < 40))).any()


def test_contention_moves_time_not_learning(tmp_path):
    # every selected device kept: the aggregate is summed in device-id order, so the same
    # updates give the same model however sharing reorders their arrivals
    from helpers import REPO

    from fedsim.config import load_scenario

    same = [
        "rounds.deadline_s=null", "rounds.over_selection=1.0", "stop.max_rounds=4",
        "stop.target_accuracy=null", "availability.kind=always_on",
        "topology.edges.0.access_mbps.wifi.up=2", "topology.edges.1.access_mbps.4g.up=2",
    ]  # fmt: skip
    runs = {
        on: run(load_scenario(REPO / "scenarios" / "quickstart.yaml",
                              [*same, f"network.contention={str(on).lower()}"]), tmp_path / str(on))
        for on in (True, False)
    }  # fmt: skip
    assert (runs[True].device_rounds["up_shared_s"] > 0).any()
    assert (
        runs[True].rounds["virtual_time_s"].iloc[-1] > runs[False].rounds["virtual_time_s"].iloc[-1]
    )
    assert runs[True].rounds["accuracy"].tolist() == runs[False].rounds["accuracy"].tolist()
