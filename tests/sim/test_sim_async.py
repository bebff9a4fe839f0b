"""The asynchronous protocol on a hand-built trace: versions, staleness and weights.

Three devices on one edge, fixed speeds, no jitter, nothing shared, and a backhaul and a
cloud so fast (microseconds) that a device's cycle is its download, training and upload:
about 1.033, 2.633 and 4.333 virtual seconds. With three slots each device is re-dispatched
as soon as the server has handled its update, from the version then current.
"""

import math

import pytest
import yaml
from conftest import device_profile, hand_scenario, link_profile

from fedsim.api import run
from fedsim.config import scenario_from_dict
from fedsim.config_rounds import ServerRuleSpec, StalenessSpec
from fedsim.data import load_dataset, partition
from fedsim.seeding import Purpose, stream
from fedsim.sim.staleness import coefficient, staleness_factor

COMPUTE_S = (1.0, 2.6, 4.3)  # training seconds of devices 0, 1, 2 (overhead per step only)
MODEL_BYTES = (64 * 32 + 32 + 32 * 10 + 10) * 4


def steps(seed: int) -> list[int]:
    ds = load_dataset("digits", None, seed)
    parts = partition(ds, 3, "iid", stream(seed, Purpose.PARTITION))
    return [math.ceil(len(p.train_idx) / 20) for p in parts]


@pytest.fixture
def trace_profiles(tmp_path):
    root = tmp_path / "profiles"
    (root / "devices").mkdir(parents=True)
    (root / "networks").mkdir()
    n_steps = steps(5)
    devices = [device_profile(f"d{i}", "device", 1e15, COMPUTE_S[i] / n_steps[i]) for i in range(3)]
    devices += [device_profile("srv", "edge", 1e15, 0.0), device_profile("cld", "cloud", 1e15, 0.0)]
    links = [link_profile("lan", 8.0, 16.0, 10.0), link_profile("bh", 1e6, 1e6, 1e-3)]
    for d in devices:
        (root / "devices" / f"{d['name']}.yaml").write_text(yaml.safe_dump(d))
    for link in links:
        (root / "networks" / f"{link['name']}.yaml").write_text(yaml.safe_dump(link))
    return root


def scenario(server: dict, learning: bool = False, **extra) -> dict:
    devices = [{"hardware": f"d{i}", "link": "lan", "count": 1} for i in range(3)]
    return hand_scenario(
        "trace", 5, devices,
        rounds={"kind": "async", "concurrency": 3, "server": server, **extra},
        network={"contention": False},
        stop={"max_rounds": 9 if server["kind"] == "fedasync" else 4},
        evaluation={"every": 3, "ua": False},
        learning=learning,
        checkpoint={"enabled": False},
    )  # fmt: skip


def run_trace(tmp_path, profiles, server: dict, name: str = "out", **extra):
    sc = scenario_from_dict(scenario(server, **extra), "trace.yaml")
    return run(sc, tmp_path / name, profiles_dir=profiles)


def cycle_s(i: int) -> float:
    down = 0.010 + MODEL_BYTES * 8 / 16e6
    up = 0.010 + MODEL_BYTES * 8 / 8e6
    return down + COMPUTE_S[i] + up


def test_staleness_functions_match_xie_et_al():
    assert staleness_factor(StalenessSpec(kind="constant"), 7) == 1.0
    assert staleness_factor(StalenessSpec(kind="polynomial", a=0.5), 3) == pytest.approx(0.5)
    hinge = StalenessSpec(kind="hinge", a=2.0, b=4)
    assert staleness_factor(hinge, 4) == 1.0
    assert staleness_factor(hinge, 6) == pytest.approx(1 / 5)
    buff = ServerRuleSpec(kind="fedbuff", buffer_size=4, server_lr=2.0)
    assert coefficient(buff, 9) == pytest.approx(0.5)


def test_fedasync_trace_versions_staleness_and_weights(tmp_path, trace_profiles):
    # Act
    server = {"kind": "fedasync", "alpha": 0.6, "staleness": {"kind": "polynomial", "a": 0.5}}
    res = run_trace(tmp_path, trace_profiles, server)

    # Assert: worked out by hand from the cycles 1.033, 2.633, 4.333 s
    up = res.updates[res.updates["fate"] == "applied"].sort_values("version")
    expected = [  # (version, device, base version, staleness, k-th update of that device)
        (1, 0, 0, 0, 1), (2, 0, 1, 0, 2), (3, 1, 0, 2, 1), (4, 0, 2, 1, 3), (5, 0, 4, 0, 4),
        (6, 2, 0, 5, 1), (7, 0, 5, 1, 5), (8, 1, 3, 4, 2), (9, 0, 7, 1, 6),
    ]  # fmt: skip
    got = list(
        zip(up["version"], up["device_id"], up["base_version"], up["staleness"], strict=True)
    )
    assert got == [e[:4] for e in expected]
    for (_, d, _, tau, k), w, t in zip(expected, up["weight"], up["arrival_s"], strict=True):
        assert w == pytest.approx(0.6 * (tau + 1) ** -0.5, rel=1e-12)
        assert t == pytest.approx(k * cycle_s(d), abs=1e-4)  # plus microseconds of backhaul
    rounds = res.rounds
    assert list(rounds["version"]) == list(range(1, 10))
    assert list(rounds["completed"]) == [1] * 9
    assert rounds["virtual_time_s"].is_monotonic_increasing


def test_fedbuff_trace_buffers_and_steps(tmp_path, trace_profiles):
    # Act
    server = {"kind": "fedbuff", "buffer_size": 2, "server_lr": 1.0}
    res = run_trace(tmp_path, trace_profiles, server)

    # Assert: pairs of arrivals make a version; staleness counts versions, not arrivals
    up = res.updates[res.updates["fate"] == "applied"].sort_values(["arrival_s"])
    expected = [  # (device, base version, staleness, version it entered)
        (0, 0, 0, 1), (0, 0, 0, 1), (1, 0, 1, 2), (0, 1, 0, 2),
        (0, 2, 0, 3), (2, 0, 2, 3), (0, 2, 1, 4), (1, 1, 2, 4),
    ]  # fmt: skip
    got = list(
        zip(up["device_id"], up["base_version"], up["staleness"], up["version"], strict=True)
    )
    assert got == expected
    assert list(up["weight"]) == [0.5] * 8  # server_lr * s(τ) / K with constant s
    assert list(res.rounds["completed"]) == [2, 2, 2, 2]


def test_max_staleness_discards_and_frees_the_slot(tmp_path, trace_profiles):
    # Act
    server = {"kind": "fedasync", "alpha": 0.6}
    res = run_trace(tmp_path, trace_profiles, server, max_staleness=2)

    # Assert: d2's first update (staleness 5) and d1's second (4) are discarded, counted
    fates = res.updates.set_index(["device_id", "dispatch"])["fate"]
    stale = res.updates[res.updates["fate"] == "stale"]
    assert set(stale["device_id"]) >= {2}
    assert (stale["staleness"] > 2).all()
    applied = res.updates[res.updates["fate"] == "applied"]
    assert (applied["staleness"] <= 2).all()
    assert len(fates) == len(res.updates)


def test_fedasync_mix_is_the_hand_computed_convex_combination():
    """(1 - c) x + c x_update, rounded once to float32."""
    import torch

    from fedsim.algorithms.fedasync import mix

    x = {"w": torch.tensor([1.0, 2.0], dtype=torch.float32)}
    u = {"w": torch.tensor([3.0, -2.0], dtype=torch.float32)}
    out = mix(x, u, 0.25)
    assert out["w"].tolist() == [1.5, 1.0]
    assert out["w"].dtype == torch.float32


def test_fedbuff_step_is_the_mean_weighted_delta():
    import torch

    from fedsim.algorithms.fedbuff import apply_buffer

    x = {"w": torch.tensor([1.0, 1.0])}
    items = [
        ({"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])}, 0.5),
        ({"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([0.0, 0.0])}, 0.25),
    ]
    # x + 0.5 (1, -1) + 0.25 (0, 4) = (1.5, 1.5)
    assert apply_buffer(x, items)["w"].tolist() == [1.5, 1.5]


class LowestIdFirst:
    """A pluggable selection rule: always the idle on-line device with the lowest id."""

    def choose(self, candidates, now_s, rng):
        return int(candidates[0])


def test_a_pluggable_selection_rule_chooses_the_devices(tmp_path, trace_profiles):
    # Arrange: a rule importable as module:Class; one slot only
    server = {"kind": "fedasync", "alpha": 0.5}

    # Act
    res = run_trace(
        tmp_path, trace_profiles, server, concurrency=1,
        selection="test_sim_async:LowestIdFirst",
    )  # fmt: skip

    # Assert: device 0 is always idle when the slot frees, so it takes every dispatch
    assert set(res.updates["device_id"]) == {0}
    assert list(res.updates["dispatch"]) == list(range(9))


def test_drop_outs_and_time_outs_free_their_slots(tmp_path):
    # Arrange: the quickstart's on/off devices, a deadline only fast devices meet
    from helpers import REPO

    from fedsim.config import load_scenario

    sets = [
        "rounds={kind: async, concurrency: 10, deadline_s: 0.5,"
        " failure_detection: {kind: instant}}",
        "stop.max_rounds=40", "stop.target_accuracy=null", "learning=false",
        "availability={kind: on_off, mean_on_s: 1.0, mean_off_s: 1.0}",
    ]  # fmt: skip
    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml", sets)

    # Act
    res = run(sc, tmp_path / "out")

    # Assert: each fate is counted where the rows say so
    fates = res.updates["fate"].value_counts()
    assert fates["applied"] == 40
    assert fates["timed_out"] > 0 and fates["dropped"] > 0
    rounds = res.rounds
    assert rounds["stragglers"].sum() == fates["timed_out"]
    assert rounds["dropped"].sum() == fates["dropped"]
    timed = res.updates[res.updates["fate"] == "timed_out"]
    assert timed["arrival_s"].isna().all()
    # a device row per ended dispatch, in the version row where its fate was decided; the
    # dispatches still going at the end come after the last version row
    d = res.device_rounds
    assert (d["round"] < len(rounds)).sum() == rounds["participants"].sum()
    assert (d["round"] <= len(rounds)).all()
    dispatches = res.updates[res.updates["source"] == "device"]
    assert len(d) <= len(dispatches)  # those still training at the end have none


def test_evaluation_every_virtual_seconds(tmp_path, trace_profiles):
    # Arrange: evaluate at the first version after every 2 virtual seconds (and every 100)
    sc = scenario({"kind": "fedasync"}, learning=True)
    sc["evaluation"] = {"every": 100, "every_s": 2.0, "ua": False}
    sc["stop"] = {"max_rounds": 9}

    # Act
    res = run(scenario_from_dict(sc, "trace.yaml"), tmp_path / "out", profiles_dir=trace_profiles)

    # Assert: the first versions after 2 s (v2 at 2.07 s) and 4 s (v5 at 4.13 s); the last
    # (v9 at 6.2 s, also the first after 6 s)
    r = res.rounds.set_index("version")
    assert list(r.index[r["accuracy"].notna()]) == [2, 5, 9]
    assert r.loc[2, "virtual_time_s"] == pytest.approx(2 * cycle_s(0), abs=1e-4)


def test_async_config_errors_name_the_field(tmp_path):
    from fedsim.errors import InputError

    bad = scenario({"kind": "fedasync", "alpha": 0.0})
    with pytest.raises(InputError) as err:
        scenario_from_dict(bad, "x.yaml")
    assert "rounds.server.alpha" in str(err.value)
    sync_only = scenario({"kind": "fedasync"})
    sync_only["rounds"]["cloud_every"] = 2
    with pytest.raises(InputError) as err:
        scenario_from_dict(sync_only, "x.yaml")
    assert "rounds.cloud_every: unknown key" in str(err.value)
