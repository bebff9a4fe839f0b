import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from conftest import OFFLOAD_UTILISATION
from demo import make_demo_run
from matplotlib.figure import Figure

from fedsim.analysis import (
    load_run,
    load_runs,
    load_sweep,
    mean_ci,
    plot_cumulative,
    plot_curves,
    plot_device_timeline,
    plot_metric,
    plot_time_breakdown,
    plot_ua_boxplot,
    save_figure,
)
from fedsim.analysis.metrics import metric_range
from fedsim.analysis.plots import (
    device_rounds_with_plans,
    edge_utilisation,
    has_offloading,
    pick_offload_round,
    pick_timeline_round,
    plot_edge_utilisation,
)


@pytest.mark.parametrize("x", ["time", "round"])
@pytest.mark.parametrize("band", ["ci", "minmax", "none"])
def test_plot_metric_one_line_per_config(demo_sweep, x, band):
    fig = plot_metric(load_sweep(demo_sweep), "accuracy", x=x, band=band)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "participants=3 (3 seeds)",
        "participants=30 (3 seeds)",
    ]


def test_plot_metric_skips_unevaluated_rounds(hand_run):
    fig = plot_metric(load_run(hand_run), "accuracy", x="round")
    xs = fig.axes[0].get_lines()[0].get_xdata()
    assert list(xs) == [1, 3, 4, 5]


def test_all_figures_save_png_and_svg(demo_sweep, tmp_path):
    rs = load_sweep(demo_sweep)
    figs = {
        "curves": plot_curves(rs),
        "cumulative": plot_cumulative(rs, x="round"),
        "breakdown": plot_time_breakdown(rs),
        "breakdown_pct": plot_time_breakdown(rs, percent=True),
        "ua": plot_ua_boxplot(rs),
        "timeline": plot_device_timeline(rs[0]),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        png, svg = save_figure(fig, tmp_path / name)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ET.parse(svg)  # well-formed SVG


def test_timeline_marks_deadline_and_stragglers(hand_run):
    run = load_run(hand_run)
    assert pick_timeline_round(run) == 1  # every round has one bad device: first wins
    fig = plot_device_timeline(run, round=2)
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "deadline" in labels and "round end" in labels
    deadline_x = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert deadline_x == [10.0 + 12.0]  # round start + rounds.deadline_s
    assert "1 straggler" in ax.get_title()


def test_ua_boxplot_uses_last_version(hand_run):
    fig = plot_ua_boxplot(load_run(hand_run))
    ax = fig.axes[0]
    # devices at version 5: 0.55, 0.65, 0.75 -> the mean marker sits at 0.65
    means = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
    assert means[0].get_ydata()[0] == pytest.approx(0.65)


def _edge_lane_bars(ax, color):
    """Return (x, width) of the filled bars of one face colour, in drawing order."""
    from matplotlib.colors import to_rgba

    return [
        (round(p.get_x(), 9), round(p.get_width(), 9))
        for p in ax.patches
        if p.get_facecolor() == to_rgba(color)
    ]


def test_device_rounds_with_plans_reads_labels_back(offload_run):
    run = load_run(offload_run)
    assert run.device_rounds["plan"].notna().all()  # load_run reads the labels as text
    dr = device_rounds_with_plans(run)
    assert dr.loc[dr["round"] == 1, "plan"].tolist() == [
        "local", "local", "full", "split(2)", "split(2)", "local",
    ]  # fmt: skip
    assert has_offloading(run) and pick_offload_round(run) == 1
    run.device_rounds = dr  # labels already text: kept as they are
    assert device_rounds_with_plans(run)["plan"].tolist() == dr["plan"].tolist()


def test_edge_utilisation_by_hand(offload_run):
    run = load_run(offload_run)
    util = edge_utilisation(run)
    got = {e: g["utilisation"].round(12).tolist() for e, g in util.groupby("edge", sort=False)}
    assert got == OFFLOAD_UTILISATION
    assert util["edge_tier_s"].tolist() == [1.0] * 6  # every edge kept a device every round
    fig = plot_edge_utilisation(run)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 4  # per edge: total (solid) and offloaded training (dotted)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "edge home: offloaded training + edge tier (mean 40.0 %)"
    assert labels[2] == "edge operator: offloaded training + edge tier (mean 20.0 %)"
    solid = ax.get_lines()[2]
    assert list(solid.get_xdata()) == [0.0, 10.0, 20.0, 30.0]
    assert list(solid.get_ydata()) == pytest.approx([15.0, 20.0, 25.0, 25.0])


def test_timeline_draws_offloaded_work_on_edge_lanes(offload_run):
    run = load_run(offload_run)
    fig = plot_device_timeline(run, round=0)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [
        "0 · rpi4/wifi",
        "1 · rpi4/wifi",
        "2 · rpi3b/wifi · full",
        "3 · phone_mid/4g · split(2)",
        "4 · phone_mid/4g",
        "5 · phone_low/3g",
        "edge home",
        "edge operator",
    ]
    # full: the data upload (0-2 s) comes first, then the edge trains 2-5 s on its lane
    assert _edge_lane_bars(ax, "#c51b8a") == [(2.0, 3.0)]
    # split: the compute interval (1-6 s) on the device's lane and on the edge's lane
    assert _edge_lane_bars(ax, "#c6dbef") == [(1.0, 5.0)]
    assert _edge_lane_bars(ax, "#fbb4d9") == [(1.0, 5.0)]
    # the edge tier after the close (8.5 s) on both edge lanes
    assert _edge_lane_bars(ax, "#31a354") == [(8.5, 1.0), (8.5, 1.0)]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    for label in ("Upload of training data (full)", "Trained on the edge (full)", "oom"):
        assert label in labels
    oom = [ln for ln in ax.get_lines() if ln.get_marker() == "D"]
    assert len(oom) == 1 and list(oom[0].get_ydata()) == [5]
    assert ax.get_title().endswith("5 completed, 1 oom; 2 offloaded")
    texts = [t.get_text() for t in ax.texts]
    assert "2: edge 3 s" in texts and "3: edge 1 s" in texts


def test_old_runs_have_no_edge_lanes(hand_run):
    run = load_run(hand_run)
    assert not has_offloading(run) and pick_offload_round(run) is None
    ax = plot_device_timeline(run, round=2).axes[0]
    assert not any(t.get_text().startswith("edge") for t in ax.get_yticklabels())
    assert edge_utilisation(run).empty
    ax = plot_edge_utilisation(run).axes[0]
    assert not ax.get_lines() and "no offloading columns" in ax.texts[0].get_text()


def test_offload_figures_save_png_and_svg(offload_run, tmp_path):
    run = load_run(offload_run)
    for name, fig in {
        "timeline": plot_device_timeline(run, round=2),
        "utilisation": plot_edge_utilisation(run),
    }.items():
        png, svg = save_figure(fig, tmp_path / name)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ET.parse(svg)


def _band_ys(ax):
    """Return the y values of the axes' filled bands (fill_between), NaN left out."""
    ys = [p.vertices[:, 1] for c in ax.collections for p in c.get_paths()]
    ys = np.concatenate(ys) if ys else np.array([])
    return ys[np.isfinite(ys)]


def test_ci_band_is_clipped_to_the_metric_range(tmp_path, make_hand_run):
    # three seeds whose accuracy at round 5 is 0.7, 0.99, 0.99: the raw 95 % interval
    # reaches 1.3, the band stops at 1
    paths = []
    for i, acc in enumerate([0.7, 0.99, 0.99]):
        path = make_hand_run(tmp_path / f"s{i}", seed=i)
        rounds = pd.read_csv(path / "rounds.csv")
        rounds.loc[4, "accuracy"] = acc
        rounds.to_csv(path / "rounds.csv", index=False)
        paths.append(path)
    rs = load_runs(paths, labels=["x"] * 3)
    assert mean_ci([0.7, 0.99, 0.99]).high > 1.3
    ax = plot_metric(rs, "accuracy", x="round").axes[0]
    ys = _band_ys(ax)
    assert ys.max() == 1.0 and ys.min() >= 0.0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["config=x (3 seeds)"]


def test_metric_range():
    assert metric_range("accuracy") == (0.0, 1.0) and metric_range("ua_p10") == (0.0, 1.0)
    for name in ("round_time_s", "cum_bytes", "cum_energy_j", "loss", "energy_j", "rounds"):
        assert metric_range(name) == (0.0, math.inf)
    assert metric_range("something_else") == (-math.inf, math.inf)


@pytest.mark.parametrize(("devices", "step"), [(100, 1), (300, 3)])
def test_timeline_of_many_devices_stays_compact(tmp_path, devices, step):
    run = load_run(make_demo_run(tmp_path / "run", devices=devices, participants=devices, rounds=1))
    fig = plot_device_timeline(run, round=1)
    assert fig.get_size_inches()[1] * 100 <= 1200  # px at the report's 100 dpi (was 3,000)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ticks) == math.ceil(devices / step)  # every step-th lane labelled
    assert ticks[0] == "0 · rpi4/wifi" and ticks[-1].endswith(" · phone/4g")
