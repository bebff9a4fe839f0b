"""The timing model against hand-computed values on a small deterministic scenario."""

import pandas as pd
import pytest
from conftest import hand_scenario

from fedsim.api import run
from fedsim.config import scenario_from_dict
from fedsim.data import load_dataset, partition
from fedsim.seeding import Purpose, stream

MODEL_BYTES = (64 * 32 + 32 + 32 * 10 + 10) * 4  # digits_mlp parameters, float32
LINEAR_FLOPS = 2 * (64 * 32 + 32 * 10)  # forward multiply-adds of its two Linear layers


def scenario(**rounds) -> dict:
    devices = [
        {"hardware": "fast", "link": "lan", "count": 2},
        {"hardware": "slow", "link": "lan", "count": 2},
    ]
    return hand_scenario("hand", 5, devices, rounds=rounds, stop={"max_rounds": 2})


def transfer_s(nbytes: int, mbps: float, rtt_ms: float) -> float:
    return rtt_ms / 1000 + nbytes * 8 / (mbps * 1e6)


def expected_compute_s(num_samples: int, flops_per_s: float, fwd_flops: float) -> float:
    full, rest = divmod(num_samples, 20)
    sizes = [20] * full + ([rest] if rest else [])
    return sum(0.01 + 3 * fwd_flops * b / flops_per_s for b in sizes)


def samples_per_device(seed: int) -> list[int]:
    ds = load_dataset("digits", None, seed)
    parts = partition(ds, 4, "iid", stream(seed, Purpose.PARTITION))
    return [len(p.train_idx) for p in parts]


def run_hand(tmp_path, fixed_profiles, **rounds):
    sc = scenario_from_dict(scenario(**rounds), "hand.yaml")
    return run(sc, tmp_path / "out", profiles_dir=fixed_profiles)


def test_phase_times_deadline_and_round_end(tmp_path, fixed_profiles):
    # Prepare
    res = run_hand(tmp_path, fixed_profiles, deadline_s=1.0)
    meta_flops = pd.read_json(res.path / "run.json", typ="series")["model"][
        "forward_flops_per_sample"
    ]
    assert meta_flops >= LINEAR_FLOPS  # Linear layers, plus ReLU/bias if counted
    samples = samples_per_device(5)
    fetch = transfer_s(MODEL_BYTES, 80, 20)
    down = transfer_s(MODEL_BYTES, 16, 10)
    up = transfer_s(MODEL_BYTES, 8, 10)
    rows = res.device_rounds[res.device_rounds["round"] == 0].set_index("device_id")

    # Assert: per-device phases
    for d in range(4):
        speed = 1e9 if d < 2 else 1e6
        compute = expected_compute_s(samples[d], speed, meta_flops)
        row = rows.loc[d]
        assert row["download_s"] == pytest.approx(fetch + down, rel=1e-12)
        finish = fetch + down + compute + up
        if finish <= 1.0:
            assert row["status"] == "completed"
            assert row["compute_s"] == pytest.approx(compute, rel=1e-12)
            assert row["upload_s"] == pytest.approx(up, rel=1e-12)
            assert row["wait_s"] == pytest.approx(1.0 - finish, rel=1e-9)
            assert row["bytes_up"] == MODEL_BYTES
        else:
            assert row["status"] == "straggler"
            assert row["end_s"] == pytest.approx(1.0)
            assert row["bytes_up"] == 0
    # the fast devices make the 1 s deadline, the slow ones (1000x slower) do not
    assert list(rows["status"]) == ["completed", "completed", "straggler", "straggler"]

    # Assert: round end = deadline + edge aggregation and upload + cloud aggregation
    num_params = MODEL_BYTES // 4
    edge_s = 2 * num_params * 2 / 1e10 + transfer_s(MODEL_BYTES, 80, 20)
    cloud_s = 2 * num_params * 1 / 1e11
    r0 = res.rounds.iloc[0]
    assert r0["edge_s"] == pytest.approx(edge_s, rel=1e-12)
    assert r0["cloud_s"] == pytest.approx(cloud_s, rel=1e-12)
    assert r0["virtual_time_s"] == pytest.approx(1.0 + edge_s + cloud_s, rel=1e-12)
    assert (r0["completed"], r0["stragglers"], r0["dropped"]) == (2, 2, 0)
    # the breakdown columns add up to the round's duration
    parts = r0[["download_s", "compute_s", "upload_s", "wait_s", "edge_s", "cloud_s"]].sum()
    assert parts == pytest.approx(r0["virtual_time_s"] - r0["round_start_s"], rel=1e-12)
    # round 1 starts where round 0 ended
    assert res.rounds.iloc[1]["round_start_s"] == r0["virtual_time_s"]


def test_without_deadline_round_waits_for_the_slowest(tmp_path, fixed_profiles):
    res = run_hand(tmp_path, fixed_profiles)
    samples = samples_per_device(5)
    fetch = transfer_s(MODEL_BYTES, 80, 20)
    flops = float(
        pd.read_json(res.path / "run.json", typ="series")["model"]["forward_flops_per_sample"]
    )
    finishes = [
        fetch + transfer_s(MODEL_BYTES, 16, 10)
        + expected_compute_s(samples[d], 1e9 if d < 2 else 1e6, flops)
        + transfer_s(MODEL_BYTES, 8, 10)
        for d in range(4)
    ]  # fmt: skip
    rows = res.device_rounds[res.device_rounds["round"] == 0]
    assert (rows["status"] == "completed").all()
    num_params = MODEL_BYTES // 4
    edge_s = 2 * num_params * 4 / 1e10 + transfer_s(MODEL_BYTES, 80, 20)
    r0 = res.rounds.iloc[0]
    assert r0["virtual_time_s"] == pytest.approx(max(finishes) + edge_s + 2 * num_params / 1e11)


def test_over_selection_keeps_first_k_reports(tmp_path, fixed_profiles):
    res = run_hand(tmp_path, fixed_profiles, participants=2, over_selection=2.0)
    rows = res.device_rounds[res.device_rounds["round"] == 0].set_index("device_id")
    assert len(rows) == 4  # ceil(2 * 2.0) selected
    assert list(rows["status"]) == ["completed", "completed", "discarded", "discarded"]
    r0 = res.rounds.iloc[0]
    assert r0["completed"] == 2
    # collection closed when the second report arrived
    assert r0["wait_s"] >= 0
    close = rows.loc[[0, 1], "end_s"].max()
    assert rows.loc[2, "end_s"] == pytest.approx(close)


def test_min_report_fraction_fails_a_round(tmp_path, fixed_profiles):
    res = run_hand(tmp_path, fixed_profiles, deadline_s=1.0, min_report_fraction=0.75)
    assert list(res.rounds["completed"]) == [2, 2]  # 2 of 4 reported: fewer than 75 %
    assert list(res.rounds["version"]) == [0, 0]  # so no new global model
    assert list(res.rounds["edge_s"]) == [0.0, 0.0]
    ok = run_hand(tmp_path / "b", fixed_profiles, deadline_s=1.0, min_report_fraction=0.5)
    assert list(ok.rounds["version"]) == [1, 2]
