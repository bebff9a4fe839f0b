import re

import pandas as pd
import pytest
from conftest import OFFLOAD_DEVICE_COLUMNS, OFFLOAD_ROUND_COLUMNS  # tests/analysis/conftest.py
from demo import make_demo_run

from fedsim.analysis import load, write_report
from fedsim.analysis.report import edge_utilisation_table, plan_table


def test_report_of_a_sweep_is_self_contained(demo_sweep, tmp_path):
    out = write_report(demo_sweep, tmp_path / "r" / "report.html")
    assert out == tmp_path / "r" / "report.html"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # nothing fetched from anywhere: every src is an inline data URI, no stylesheets/scripts
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in text and "<script" not in text
    for heading in (
        "Scenario",
        "Key figures",
        "Learning curves",
        "Cost",
        "Where round time goes",
        "User-model accuracy across devices",
        "Stragglers: device timelines",
        "All runs",
    ):
        assert f">{heading}<" in text
    assert "rounds.participants" in text
    assert ">nan<" not in text.lower()
    assert not list(tmp_path.glob("r/.*tmp*"))


def test_report_default_location_and_not_reached(tmp_path):
    run_dir = make_demo_run(tmp_path / "run", rounds=4)
    out = write_report(run_dir, target=0.999)
    assert out == run_dir / "report.html"
    text = out.read_text(encoding="utf-8")
    assert "not reached" in text
    assert "accuracy ≥ 0.999" in text


def test_report_of_run_without_evaluation(tmp_path, make_hand_run):
    run_dir = make_hand_run(tmp_path / "run")
    rounds = pd.read_csv(run_dir / "rounds.csv")
    rounds[["accuracy", "ua_mean", "loss"]] = float("nan")
    rounds.to_csv(run_dir / "rounds.csv", index=False)
    (run_dir / "device_ua.csv").write_text("version,device_id,accuracy\n")
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "no run evaluated" not in text  # no target: the target sections are left out
    assert "User-model accuracy across devices" not in text


def _images(text):
    return dict(re.findall(r'<img alt="([^"]*)" src="(data:image/png;base64,[^"]*)"', text))


def test_offload_fixture_has_fedsim_columns():
    from fedsim.sim.rows import DEVICE_COLUMNS, ROUND_COLUMNS

    assert list(ROUND_COLUMNS) == OFFLOAD_ROUND_COLUMNS
    assert list(DEVICE_COLUMNS) == OFFLOAD_DEVICE_COLUMNS


def test_plan_table_per_device_group(offload_run):
    table = plan_table(load(offload_run))
    assert "configuration" not in table  # one configuration
    groups = table[["edge", "profile", "link", "plan"]].itertuples(index=False, name=None)
    assert list(groups) == [
        ("home", "rpi3b", "wifi", "full"),
        ("home", "rpi4", "wifi", "local"),
        ("operator", "phone_low", "3g", "local"),
        ("operator", "phone_mid", "4g", "local"),
        ("operator", "phone_mid", "4g", "split(2)"),
    ]
    split = table.iloc[4]
    assert split["device-rounds"] == 5
    assert split["% of group"] == pytest.approx(500 / 6)
    assert split["% of all"] == pytest.approx(500 / 18)
    assert split["completed (%)"] == pytest.approx(80.0)
    assert split["edge compute (s, mean)"] == pytest.approx(1.1)
    assert split["activations up + down (MB per run)"] == pytest.approx(3000 / 1e6)
    assert table.iloc[0]["training data up (MB per run)"] == pytest.approx(5000 / 1e6)
    assert table.iloc[2]["oom"] == 3
    util = edge_utilisation_table(load(offload_run))
    assert util["edge"].tolist() == ["home", "operator"]
    assert util["mean utilisation (%)"].tolist() == pytest.approx([40.0, 20.0])
    assert util["busiest round (%)"].tolist() == pytest.approx([40.0, 25.0])


def test_report_shows_offloading(offload_run, tmp_path):
    text = write_report(offload_run, tmp_path / "report.html").read_text(encoding="utf-8")
    assert ">Offloading<" in text
    for header in ("plan", "% of group", "% of all", "edge compute (s, mean)"):
        assert f"<th>{header}</th>" in text
    for cell in ("split(2)", "full", "phone_mid"):
        assert f"<td>{cell}</td>" in text
    images = _images(text)
    assert "edge utilisation offload" in images
    assert "Utilisation = (the sum over the edge" in text
    # the straggler round (2) and the round with the most offloaded devices (1)
    assert "device timeline offload" in images and "device timeline offload offloading" in images
    assert "offload, round 1 (the round with the most offloaded devices)" in text
    assert "interleaving is not in the result files" in text
    assert ">nan<" not in text.lower()


@pytest.mark.parametrize("fmt", ["hand-made, before fetch_s", "before offloading"])
def test_report_of_runs_without_offloading(fmt, hand_run, offload_run, tmp_path):
    if fmt == "before offloading":  # the columns of the previous format: fetch_s but no plan
        run_dir = offload_run
        offload_cols = [
            "plan", "edge_compute_s", "edge_queue_s", "act_bytes_up", "act_bytes_down",
            "data_bytes_up", "raw_data_left", "offloaded",
        ]  # fmt: skip
        for name in ("rounds.csv", "device_rounds.csv"):
            frame = pd.read_csv(run_dir / name)
            frame.drop(columns=[c for c in offload_cols if c in frame]).to_csv(
                run_dir / name, index=False
            )
    else:
        run_dir = hand_run
    rs = load(run_dir)
    assert plan_table(rs).empty and edge_utilisation_table(rs).empty
    text = write_report(run_dir, tmp_path / "report.html").read_text(encoding="utf-8")
    assert ">Offloading<" not in text and "edge utilisation" not in text
    assert ">Stragglers: device timelines<" in text
    assert len(_images(text)) >= 5
