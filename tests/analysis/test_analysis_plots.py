import xml.etree.ElementTree as ET

import pytest
from matplotlib.figure import Figure

from analysis import (
    load_run,
    load_sweep,
    plot_cumulative,
    plot_curves,
    plot_device_timeline,
    plot_metric,
    plot_time_breakdown,
    plot_ua_boxplot,
    save_figure,
)
from analysis.plots import pick_timeline_round


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
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
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
