"""The report's device timelines (Gantt charts) of synchronous rounds."""

from __future__ import annotations

import html

import pandas as pd

from fedsim.analysis.load import RunData, RunSet
from fedsim.analysis.plots import pick_offload_round, pick_timeline_round, plot_device_timeline
from fedsim.analysis.report_html import figure_html, note_html

__all__ = ["timelines_section"]


def _offload_note(run: RunData) -> str:
    if pick_offload_round(run) is None:  # no device of the run offloaded its training
        return ""
    return (
        " Offloaded work is also drawn on a lane per edge: a full device's training "
        "(its own lane only outlined), a split device's compute interval on both lanes, "
        "hatched — device and edge take turns batch by batch, and the per-batch "
        "interleaving is not in the result files; the label gives the edge's compute "
        "seconds within it. Edge lanes end with the round's edge_s; purple diamonds "
        "mark devices that cannot hold the model (oom)."
    )


def _round_range(run: RunData) -> str:
    rounds = pd.to_numeric(run.device_rounds["round"], errors="coerce").dropna()
    return f"{int(rounds.min())}–{int(rounds.max())}" if len(rounds) else "none"


def _timeline_figures(run: RunData, gantt_round: int | None) -> str:
    """Return one run's device timelines: the chosen round, or the worst (and offload) one."""
    phases = "each device's download, compute, upload and wait."
    if gantt_round is not None:
        if not (pd.to_numeric(run.device_rounds["round"], errors="coerce") == gantt_round).any():
            return (
                f'<p class="note">{html.escape(run.run_id)}: no device rows for round '
                f"{gantt_round} (its rounds: {_round_range(run)}).</p>\n"
            )
        return figure_html(
            plot_device_timeline(run, gantt_round),
            f"device timeline {run.run_id}",
            f"{run.run_id}, round {gantt_round} (chosen): {phases}" + _offload_note(run),
        )
    rnd = pick_timeline_round(run)
    parts = [
        figure_html(
            plot_device_timeline(run, rnd),
            f"device timeline {run.run_id}",
            f"{run.run_id}, round {rnd} (the round with the most stragglers and "
            f"drop-outs): {phases}" + _offload_note(run),
        )
    ]
    off_rnd = pick_offload_round(run)
    if off_rnd is not None and off_rnd != rnd:
        parts.append(
            figure_html(
                plot_device_timeline(run, off_rnd),
                f"device timeline {run.run_id} offloading",
                f"{run.run_id}, round {off_rnd} (the round with the most offloaded "
                "devices)." + _offload_note(run),
            )
        )
    return "".join(parts)


def timelines_section(rs: RunSet, gantt_round: int | None) -> str:
    """Return the device timelines of the first run of up to four configurations.

    Only synchronous runs are drawn; without any, "" (or, if ``gantt_round`` was asked
    for, a note saying why there is no timeline).
    """
    # An asynchronous run has no round: the devices of one of its device_rounds.csv
    # "rounds" are the dispatches that ended between two versions. They started at
    # different times from different versions, and nothing closes the window for them
    # (deadline_s counts from each dispatch), so a Gantt chart of such a window, drawn with
    # a round's start, deadline and end, would show a barrier that does not exist. The
    # Asynchronous updates section describes those runs instead.
    if all(run.is_async for run in rs.runs):
        if gantt_round is None:
            return ""
        return "<h2>Stragglers: device timelines</h2>\n" + note_html(
            f"No timeline of round {gantt_round}: asynchronous runs have no rounds (their "
            "devices train from different versions, with no barrier between them)."
        )
    parts = ["<h2>Stragglers: device timelines</h2>\n"]
    if gantt_round is None:
        parts.append(
            '<p class="note">Another round: <code>write_report(..., gantt_round=R)</code> '
            "or <code>fedsim report DIR --round R</code>.</p>\n"
        )
    if any(run.is_async for run in rs.runs):
        parts.append(
            note_html(
                "Synchronous runs only: asynchronous runs have no rounds (their devices "
                "train from different versions, with no barrier between them)."
            )
        )
    shown: set[str] = set()
    for run in rs.runs:
        if run.is_async or run.label in shown or run.device_rounds.empty or len(shown) >= 4:
            continue
        shown.add(run.label)
        parts.append(_timeline_figures(run, gantt_round))
    return "".join(parts)
