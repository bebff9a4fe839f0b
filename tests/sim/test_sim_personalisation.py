"""The personalisation stage: FTL's fine-tuning after the last round, on the clock."""

import json

import pandas as pd
import pytest
from helpers import REPO, cut_and_resume, same_files

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.profiles import load_profiles

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
SMALL = (
    "topology.edges.0.devices.0.count=3", "topology.edges.0.devices.1.count=3",
    "stop.max_rounds=2", "stop.target_accuracy=null", "checkpoint.every_rounds=1",
    "evaluation.every=2",  # FTL fine-tunes every device at an evaluation: one is enough
)  # fmt: skip
FTL = "algorithm={use: ftl, params: {lr: 0.3, tune_epochs: 2, tune_batch_size: 50}}"


pytestmark = pytest.mark.usefixtures("mnist_env")


def test_fine_tuning_is_charged_per_device_and_the_stage_lasts_as_the_slowest(tmp_path):
    sc = load_scenario(MNIST, [*SMALL, FTL])
    res = run(sc, tmp_path / "ftl")

    stage = pd.read_csv(res.path / "personalisation.csv")
    summary = json.loads((res.path / "run.json").read_text())["summary"]
    lib = load_profiles()
    model = json.loads((res.path / "run.json").read_text())["model"]
    for row in stage.itertuples():
        hw = lib.device(row.profile)
        # 2 epochs of ceil(samples / 50) steps, each the profile's step time for its batch
        full, rest = divmod(row.samples, 50)
        sizes = ([50] * full + ([rest] if rest else [])) * 2
        expect_s = sum(hw.step_s(sc.model, model["forward_flops_per_sample"], b) for b in sizes)
        assert row.steps == len(sizes)
        assert row.compute_s == pytest.approx(expect_s, rel=1e-12)
        assert row.energy_j == pytest.approx(expect_s * hw.power_compute_w, rel=1e-12)
    assert list(stage["device_id"]) == list(range(6))
    assert stage["profile"].nunique() == 2  # two kinds of hardware: different times
    assert summary["personalisation_s"] == stage["compute_s"].max()
    assert summary["personalisation_energy_j"] == pytest.approx(stage["energy_j"].sum())
    assert summary["virtual_time_with_personalisation_s"] == pytest.approx(
        summary["virtual_time_s"] + summary["personalisation_s"]
    )


def test_algorithms_without_a_stage_write_none(tmp_path):
    res = run(load_scenario(MNIST, list(SMALL)), tmp_path / "fedavg")
    assert not (res.path / "personalisation.csv").exists()
    assert "personalisation_s" not in json.loads((res.path / "run.json").read_text())["summary"]


def test_a_resumed_run_gives_the_same_stage(tmp_path):
    sc = load_scenario(MNIST, [*SMALL, FTL])
    ref = run(sc, tmp_path / "ref")
    res = cut_and_resume(sc, tmp_path / "cut", 0)
    same_files(ref.path, res.path, ("personalisation.csv", "rounds.csv", "device_ua.csv"))


def test_perfit_pipeline_offloads_learns_and_personalises_in_one_run(tmp_path):
    """scenarios/perfit/pipeline.yaml: PerFit's three stages, each visible in the run folder."""
    sc = load_scenario(REPO / "scenarios" / "perfit" / "pipeline.yaml", [
        "stop.max_rounds=3", "evaluation.every=3",
    ])  # fmt: skip
    res = run(sc, tmp_path / "pipeline")
    dev = res.device_rounds
    # 1. offloading: the policy moved work to the edges; raw data reached the trusted one only
    assert (dev["plan"] != "local").any()
    assert set(dev.loc[dev["raw_data_left"].astype(bool), "edge_id"]) == {0}  # home
    assert (res.rounds["data_bytes_up"] > 0).any()
    # 3. personalisation: UA before and after at each evaluation, the stage on the clock
    last = res.rounds.iloc[-1]
    assert last["ua_mean"] > last["ua_before_mean"]
    stage = pd.read_csv(res.path / "personalisation.csv")
    assert len(stage) == 30 and (stage["compute_s"] > 0).all()
