import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import OFFLOAD_DEVICE_COLUMNS, OFFLOAD_ROUND_COLUMNS  # tests/analysis/conftest.py
from demo import make_demo_run, make_demo_sweep

from fedsim.analysis import (
    load,
    load_sweep,
    plot_cumulative,
    plot_curves,
    plot_metric,
    write_report,
)
from fedsim.analysis.report import edge_utilisation_table, plan_table, runs_table
from fedsim.analysis.tables import format_si


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


def _band_ys(ax):
    ys = [p.vertices[:, 1] for c in ax.collections for p in c.get_paths()]
    ys = np.concatenate(ys) if ys else np.array([])
    return ys[np.isfinite(ys)]


def test_report_bands_stay_in_range_with_two_seeds(tmp_path):
    sweep = make_demo_sweep(tmp_path / "sweep", participants=(3, 30), seeds=2, rounds=12)
    rs = load_sweep(sweep)
    # the banded figures of the report, drawn as write_report draws them
    figures = [plot_curves(rs), plot_metric(rs, "round_time_s", x="round"), plot_cumulative(rs)]
    axes = [ax for fig in figures for ax in fig.axes]
    assert len(axes) == 7
    for ax in axes:
        ys = _band_ys(ax)
        assert ys.size and ys.min() >= 0.0, ax.get_ylabel()
        if "accuracy" in ax.get_ylabel().lower():
            assert ys.max() <= 1.0, ax.get_ylabel()
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == [
            "participants=3 (2 seeds, band min–max)",
            "participants=30 (2 seeds, band min–max)",
        ]
    text = write_report(sweep, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "±" not in text  # no 95 % interval over 2 seeds in any table
    assert "n = 2)" in text and "with fewer than 3 seeds an interval means little" in text


def _scenario_rows(text):
    table = text.split("<h2>Scenario</h2>")[1].split("</table>")[0]
    return {k: html.unescape(v) for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td>", table)}


def _edit_meta(run_dir, **scenario):
    meta = json.loads((run_dir / "run.json").read_text())
    meta["scenario"].update(scenario)
    (run_dir / "run.json").write_text(json.dumps(meta))


def test_report_scenario_lists_only_what_applies(tmp_path, make_hand_run):
    run_dir = make_hand_run(tmp_path / "run")
    _edit_meta(
        run_dir,
        data={"dataset": "digits", "partition": {"kind": "dirichlet", "alpha": 0.5,
              "shards_per_device": 2, "test_per_device": None}},
        runtime={"kind": "inline", "workers": 2, "address": None, "torch_threads": 1,
                 "vectorize": "auto", "timeout_s": 600.0, "dashboard": False},
        availability={"kind": "always_on", "mean_on_s": 3600.0, "mean_off_s": 600.0},
    )  # fmt: skip
    rows = _scenario_rows(write_report(run_dir).read_text(encoding="utf-8"))
    assert rows["Learning"] == "true"
    assert rows["Data"] == "digits, partition kind=dirichlet, alpha=0.5"
    assert rows["Runtime"] == "kind=inline, torch_threads=1, vectorize=auto"
    assert rows["Availability"] == "kind=always_on"


def test_report_of_learning_false(tmp_path, make_hand_run):
    run_dir = make_hand_run(tmp_path / "run")
    rounds = pd.read_csv(run_dir / "rounds.csv")
    rounds[["accuracy", "ua_mean", "loss"]] = float("nan")
    rounds.to_csv(run_dir / "rounds.csv", index=False)
    (run_dir / "device_ua.csv").write_text("version,device_id,accuracy\n")
    _edit_meta(run_dir, learning=False, stop={"max_rounds": 5, "target_accuracy": 0.8})
    text = write_report(run_dir).read_text(encoding="utf-8")
    rows = _scenario_rows(text)
    assert rows["Learning"].startswith("false") and "Evaluation" not in rows
    images = _images(text)
    assert "learning curves" not in images and "round time" in images
    assert "No accuracy to plot: learning: false" in text
    assert "accuracy ≥" not in text  # no target: nothing can reach it
    assert "final accuracy" not in text and "final mean UA" not in text


def test_report_of_loose_runs_of_two_configurations(tmp_path, make_hand_run):
    for deadline in (12.0, 20.0):
        for seed in (1, 2):
            run_dir = make_hand_run(tmp_path / "runs" / f"d{deadline:g}-s{seed}", seed=seed)
            _edit_meta(run_dir, rounds={"participants": 3, "deadline_s": deadline})
    text = write_report(tmp_path / "runs").read_text(encoding="utf-8")
    configs = "hand [deadline_s=12.0] (2 runs); hand [deadline_s=20.0] (2 runs)"
    assert configs in _scenario_rows(text)["Configurations"]
    assert "<th>configuration</th>" in text and "<th>label</th>" not in text


def test_runs_table_is_readable(demo_sweep):
    table = runs_table(load_sweep(demo_sweep))
    assert list(table.columns) == [
        "run", "rounds.participants", "seed", "rounds", "virtual time (s)", "final accuracy",
        "final mean UA", "traffic up", "traffic down", "device energy", "stragglers", "dropped",
    ]  # fmt: skip
    assert all(re.fullmatch(r"[\d.]+ [kM]B", c) for c in table["traffic up"]), table["traffic up"]
    assert all(re.fullmatch(r"[\d.]+ k?J", c) for c in table["device energy"])
    assert format_si(2.32e9, "B") == "2.32 GB" and format_si(231_360, "B") == "231 kB"
    assert format_si(48.1, "J") == "48.1 J" and format_si(float("nan"), "B") == "n/a"


def test_report_draws_the_chosen_round(hand_run, tmp_path):
    from fedsim.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(hand_run), "--round", "3", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "hand_run, round 3 (chosen)" in text
    assert "the round with the most stragglers" not in text
    text = write_report(hand_run, out, gantt_round=99).read_text(encoding="utf-8")
    assert "hand_run: no device rows for round 99 (its rounds: 1–5)" in text
