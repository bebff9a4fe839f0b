"""A self-contained HTML report of a run or sweep folder (figures inline as base64 PNG).

This module assembles the report; its parts live in ``report_scenario`` (the scenario
summary), ``report_summary`` (target, key figures, all runs), ``report_sections`` (learning
curves, cost, round time, UA, target table), ``report_offload`` (offloading),
``report_timelines`` (device Gantt charts), ``report_async`` (asynchronous runs) and
``report_html`` (HTML building blocks).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from fedsim.analysis.load import load
from fedsim.analysis.metrics import NOT_REACHED
from fedsim.analysis.plots import offloaded
from fedsim.analysis.report_async import async_section
from fedsim.analysis.report_html import figure_to_base64_png, table_html
from fedsim.analysis.report_offload import (
    edge_utilisation_table,
    offloading_section,
    plan_table,
)
from fedsim.analysis.report_scenario import scenario_rows
from fedsim.analysis.report_sections import (
    cost_section,
    curves_section,
    target_section,
    time_breakdown_section,
    ua_section,
)
from fedsim.analysis.report_summary import (
    cards,
    default_target,
    key_figures,
    metric_of,
    runs_table,
)
from fedsim.analysis.report_timelines import timelines_section

__all__ = [
    "write_report",
    "runs_table",
    "default_target",
    "figure_to_base64_png",
    "plan_table",
    "edge_utilisation_table",
]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td:first-child { overflow-wrap: anywhere; min-width: 6em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
.kv td { text-align: left; } .note { color: #555; font-size: .9em; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 12em; }
.card b { display: block; font-size: 1.3em; }
"""


def write_report(
    run_or_sweep_dir: Path,
    out: Path | None = None,
    metric: str | None = None,
    target: float | None = None,
    confidence: float = 0.95,
    gantt_round: int | None = None,
) -> Path:
    """Write one self-contained HTML report of a run folder or a sweep folder.

    Asynchronous runs (docs/async.md) get an "Asynchronous updates" section, their
    ``rounds.csv`` rows are called versions, and the round-only sections (where round
    time goes, device timelines) leave them out; a folder may mix both kinds.

    Parameters
    ----------
    run_or_sweep_dir : Path
        A run folder, a sweep folder, or a folder of run folders.
    out : Path, optional
        The HTML file; default ``<run_or_sweep_dir>/report.html``.
    metric : str, optional
        The ``rounds.csv`` column to reach (default ``accuracy``, else ``ua_mean``).
    target : float, optional
        The threshold (default: see :func:`default_target`).
    confidence : float
        Coverage of the intervals over seeds. Intervals are clipped to each quantity's
        physical range; configurations with fewer than 3 seeds show min–max instead.
    gantt_round : int, optional
        The round (the ``round`` column of ``device_rounds.csv``, from 0) whose device
        timeline is drawn for each configuration; default: each run's round with the
        most stragglers and drop-outs (and, with offloading, the round with the most
        offloaded devices). A run without that round gets a note instead.

    Returns
    -------
    Path
        The written file (written to a temporary name, then renamed).

    Raises
    ------
    FileNotFoundError
        ``run_or_sweep_dir`` holds no complete run.
    """
    src = Path(run_or_sweep_dir)
    rs = load(src)
    if not rs.runs:
        raise FileNotFoundError(f"{src}: no complete runs to report on")
    out = Path(out) if out is not None else src / "report.html"
    metric = metric or metric_of(rs)
    if target is not None:
        target_src = "given"
    else:
        target, target_src = default_target(rs, metric)
    by = list(rs.grid_keys) or ["label"]
    title = f"fedsim report: {rs.runs[0].scenario.get('name', src.name)}"

    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n",
        f"<h1>{html.escape(title)}</h1>\n",
        f'<p class="note">Source: {html.escape(str(src))}. Times are virtual (simulated) '
        f"seconds. Intervals are {confidence:.0%} Student-t intervals over seeds, clipped "
        "to each quantity's range (accuracy 0–1; times, traffic and energy ≥ 0); with "
        "fewer than 3 seeds an interval means little, so tables and bands show the "
        "min–max over the seeds instead.</p>\n",
    ]
    parts.append(
        '<h2>Scenario</h2>\n<table class="kv">'
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in scenario_rows(rs)
        )
        + "</table>\n"
    )

    parts.append("<h2>Key figures</h2>\n")
    parts.append(cards(rs, metric, target))
    if target is not None:
        parts.append(
            f'<p class="note">Target: {metric} ≥ {target:g} ({html.escape(target_src)}).'
            f" “{NOT_REACHED}” means no seed reached it within the run.</p>\n"
        )
    parts.append(table_html(key_figures(rs, metric, target, by)))

    parts.append(curves_section(rs))
    parts.append(cost_section(rs))
    if any(r.is_async for r in rs.runs):
        parts.append(async_section(rs))
    parts.append(time_breakdown_section(rs))
    if any(offloaded(r) for r in rs.runs):  # all local everywhere: nothing to show
        parts.append(offloading_section(rs))
    parts.append(ua_section(rs))
    parts.append(timelines_section(rs, gantt_round))
    if target is not None:
        parts.append(target_section(rs, metric, target, confidence))
    parts.append("<h2>All runs</h2>\n")
    parts.append(table_html(runs_table(rs)))
    parts.append("</body></html>\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out
