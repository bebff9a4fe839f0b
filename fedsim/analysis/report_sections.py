"""The report's figure sections: learning curves, cost, round time, UA and the target table."""

from __future__ import annotations

import html

from matplotlib.figure import Figure

from fedsim.analysis.load import RunSet
from fedsim.analysis.plots import (
    plot_cumulative,
    plot_curves,
    plot_metric,
    plot_time_breakdown,
    plot_ua_boxplot,
)
from fedsim.analysis.report_async import row_noun, sync_runs
from fedsim.analysis.report_html import figure_html, note_html, table_html
from fedsim.analysis.tables import target_table, time_breakdown_table

__all__ = [
    "curves_section",
    "cost_section",
    "time_breakdown_section",
    "ua_section",
    "target_section",
]


def _name_rows(fig: Figure, noun: str) -> Figure:
    """Label the x axes that count ``rounds.csv`` rows with ``noun`` (e.g. ``version``)."""
    for ax in fig.axes:
        if ax.get_xlabel() == "Round" and noun != "round":
            ax.set_xlabel(noun.capitalize())
    return fig


def curves_section(rs: RunSet) -> str:
    """Return the learning curves (none for ``learning: false``) and the round times.

    For asynchronous runs the x axis counts versions and the round time is the time
    between consecutive versions.
    """
    noun = row_noun(rs.runs, plural=False)
    parts = ["<h2>Learning curves</h2>\n"]
    curve_metrics = [
        m
        for m in ("accuracy", "ua_mean")
        if any(m in r.rounds and r.rounds[m].notna().any() for r in rs.runs)
    ]
    if curve_metrics:
        parts.append(
            figure_html(
                _name_rows(plot_curves(rs, metrics=curve_metrics), noun),
                "learning curves",
                "Accuracy and mean user-model accuracy against virtual time (left) and "
                f"{noun} (right); lines are means over seeds, bands their intervals.",
            )
        )
    else:
        learning = any(r.scenario.get("learning", True) is not False for r in rs.runs)
        why = f"no {noun} was evaluated" if learning else "learning: false, no model was trained"
        parts.append(f'<p class="note">No accuracy to plot: {why}.</p>\n')
    if noun == "round":
        fig = plot_metric(rs, "round_time_s", x="round")
        caption = "Virtual time per round."
    elif noun == "version":
        fig = plot_metric(rs, "round_time_s", x="round", ylabel="Time between versions (virtual s)")
        caption = "Virtual time between consecutive global versions (rounds.csv rows)."
    else:
        fig = plot_metric(rs, "round_time_s", x="round", ylabel="Round or version time (virtual s)")
        caption = (
            "Virtual time per round (synchronous runs) or between consecutive global "
            "versions (asynchronous runs)."
        )
    parts.append(figure_html(_name_rows(fig, noun), "round time", caption))
    return "".join(parts)


def cost_section(rs: RunSet) -> str:
    """Return the cumulative traffic and energy against virtual time."""
    return "<h2>Cost</h2>\n" + figure_html(
        plot_cumulative(rs),
        "cumulative bytes and energy",
        "Cumulative traffic and device energy against virtual time.",
    )


def time_breakdown_section(rs: RunSet) -> str:
    """Return the per-round time by phase of the synchronous runs ("" if there are none)."""
    # An asynchronous run has no round barrier: a version's phase columns are means over
    # the devices applied into it, whose training spans many versions, so they do not add
    # up to the time between versions (nobody waits for a round to close). Its time
    # between versions is drawn under Learning curves instead.
    sync = rs if not any(r.is_async for r in rs.runs) else sync_runs(rs)
    if not sync.runs:
        return ""
    parts = ["<h2>Where round time goes</h2>\n"]
    if sync is not rs:
        parts.append(
            note_html(
                "Synchronous runs only: asynchronous runs have no round barrier (their time "
                "between versions is under Learning curves)."
            )
        )
    parts.append(
        figure_html(
            plot_time_breakdown(sync),
            "time breakdown",
            "Mean per-round time by phase (device download, compute, upload; edge; "
            "cloud; waiting for the round to close).",
        )
    )
    parts.append(table_html(time_breakdown_table(sync)))
    return "".join(parts)


def ua_section(rs: RunSet) -> str:
    """Return the per-device user-model accuracy box plots ("" without UA values)."""
    if not any(not r.device_ua.empty for r in rs.runs):
        return ""
    return "<h2>User-model accuracy across devices</h2>\n" + figure_html(
        plot_ua_boxplot(rs),
        "UA box plots",
        "Per-device user-model accuracy at each run's last evaluated version, "
        "seeds pooled; whiskers min–max, triangle the mean.",
    )


def target_section(rs: RunSet, metric: str, target: float, confidence: float) -> str:
    """Return the rounds (versions) and time to reach the target, per configuration."""
    by = list(rs.grid_keys) or ["label"]
    noun = row_noun(rs.runs)
    table = target_table(rs, metric, target, by=by, confidence=confidence)
    if noun != "rounds":
        table = table.rename(columns={"rounds": noun})
    heading = f"{noun.capitalize()} and time to {metric} ≥ {target:g}"
    return f"<h2>{html.escape(heading)}</h2>\n" + table_html(table)
