"""A self-contained HTML report of a run or sweep folder (figures inline as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis.load import RunSet, load
from analysis.metrics import NOT_REACHED
from analysis.plots import (
    pick_timeline_round,
    plot_cumulative,
    plot_curves,
    plot_device_timeline,
    plot_metric,
    plot_time_breakdown,
    plot_ua_boxplot,
)
from analysis.tables import summary_table, target_table, time_breakdown_table

__all__ = ["write_report", "default_target", "figure_to_base64_png"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
.kv td { text-align: left; } .note { color: #555; font-size: .9em; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 12em; }
.card b { display: block; font-size: 1.3em; }
"""


def figure_to_base64_png(fig: Figure, dpi: int = 100) -> str:
    """Return ``fig`` as a base64-encoded PNG string."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str, caption: str) -> str:
    data = figure_to_base64_png(fig)
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>\n"
    )


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    return (
        frame.to_html(
            index=index, na_rep="n/a", border=0, escape=True, float_format=lambda x: f"{x:,.4g}"
        )
        + "\n"
    )


def _metric_of(rs: RunSet) -> str:
    for metric in ("accuracy", "ua_mean"):
        for run in rs.runs:
            if metric in run.rounds and run.rounds[metric].notna().any():
                return metric
    return "accuracy"


def default_target(rs: RunSet, metric: str) -> tuple[float | None, str]:
    """Return the target for ``metric`` and where it came from.

    The scenario's ``stop.target_accuracy`` if set, else 90 % of the best value any
    run reached, rounded down to 0.01; None if no run has a value.
    """
    for run in rs.runs:
        target = (run.scenario.get("stop") or {}).get("target_accuracy")
        if target is not None:
            return float(target), "the scenario's stop.target_accuracy"
    best = max(
        (
            float(run.rounds[metric].max())
            for run in rs.runs
            if metric in run.rounds and run.rounds[metric].notna().any()
        ),
        default=None,
    )
    if best is None:
        return None, "no run evaluated this metric"
    return math.floor(0.9 * best * 100) / 100, "90 % of the best value reached by any run"


def _describe_topology(topo: dict[str, Any]) -> str:
    parts = []
    for edge in topo.get("edges", []):
        groups = ", ".join(
            f"{g.get('count')}× {g.get('hardware')} on {g.get('link')}"
            for g in edge.get("devices", [])
        )
        trusted = ", trusted" if edge.get("trusted") else ""
        parts.append(f"edge {edge.get('name')} ({edge.get('hardware')}{trusted}): {groups}")
    cloud = topo.get("cloud", {})
    parts.insert(0, f"cloud: {cloud.get('hardware')} via {cloud.get('backhaul')}")
    return "; ".join(parts)


def _fmt_dict(d: Any) -> str:
    if not isinstance(d, dict):
        return str(d)
    return ", ".join(
        f"{k}={_fmt_dict(v) if isinstance(v, dict) else v}"
        for k, v in d.items()
        if v is not None and v != {}
    )


def _scenario_rows(rs: RunSet) -> list[tuple[str, str]]:
    run = rs.runs[0]
    sc = run.scenario
    data = sc.get("data", {})
    algo = sc.get("algorithm", {})
    model = run.meta.get("model", {})
    rows = [
        ("Scenario", f"{sc.get('name', '?')} ({run.meta.get('scenario_file', '?')})"),
        ("fedsim version", str(run.meta.get("fedsim_version", "?"))),
        ("Data", f"{data.get('dataset', '?')}, partition {_fmt_dict(data.get('partition', {}))}"),
        (
            "Model",
            f"{model.get('name', sc.get('model', '?'))}, "
            f"{model.get('num_params', '?'):,} parameters, "
            f"{model.get('param_bytes', '?'):,} bytes"
            if isinstance(model.get("num_params"), int)
            and isinstance(model.get("param_bytes"), int)
            else str(sc.get("model", "?")),
        ),
        ("Topology", _describe_topology(sc.get("topology", {}))),
        ("Algorithm", f"{algo.get('use', '?')} {_fmt_dict(algo.get('params', {}))}".strip()),
        ("Rounds", _fmt_dict(sc.get("rounds", {}))),
        ("Availability", _fmt_dict(sc.get("availability", {}))),
        ("Stop", _fmt_dict(sc.get("stop", {}))),
        ("Evaluation", _fmt_dict(sc.get("evaluation", {}))),
        ("Runtime", _fmt_dict(sc.get("runtime", {}))),
    ]
    if rs.sweep:
        grid = rs.sweep.get("grid", {})
        rows.append(
            (
                "Sweep grid",
                "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items()),
            )
        )
        rows.append(("Sweep scenario", str(rs.sweep.get("scenario", "?"))))
    seeds = sorted({r.seed for r in rs.runs})
    rows.append(("Runs", f"{len(rs.runs)} ({len(seeds)} seeds: {', '.join(map(str, seeds))})"))
    if rs.index is not None:
        not_done = rs.index[~rs.index["status"].isin(["done"])]
        if len(not_done):
            rows.append(
                (
                    "Incomplete runs",
                    ", ".join(
                        f"{r} ({s})"
                        for r, s in zip(not_done["run_id"], not_done["status"], strict=True)
                    ),
                )
            )
    return rows


def _key_figures(rs: RunSet, metric: str, target: float | None, by: Sequence[str]) -> pd.DataFrame:
    summ = summary_table(rs)
    summ["traffic_mb"] = (summ["bytes_up"] + summ["bytes_down"]) / 1e6
    summ["energy_kj"] = summ["energy_j"] / 1e3
    agg = (
        summ.groupby(list(by), sort=False)
        .agg(
            seeds=("run_id", "count"),
            rounds=("rounds", "mean"),
            virtual_time_s=("virtual_time_s", "mean"),
            final_accuracy=("final_accuracy", "mean"),
            final_ua_mean=("final_ua_mean", "mean"),
            traffic_mb=("traffic_mb", "mean"),
            energy_kj=("energy_kj", "mean"),
            participants=("participants", "sum"),
            stragglers=("stragglers", "sum"),
            dropped=("dropped", "sum"),
        )
        .reset_index()
    )
    agg["straggler_pct"] = (
        100 * agg["stragglers"] / agg["participants"].where(agg["participants"] > 0)
    )
    agg["dropped_pct"] = 100 * agg["dropped"] / agg["participants"].where(agg["participants"] > 0)
    agg = agg.drop(columns=["participants", "stragglers", "dropped"])
    if target is not None:
        tt = target_table(rs, metric, target, by=by)
        agg.insert(len(by) + 1, f"time to {metric} ≥ {target:g}", tt["time_s"].to_numpy())
        agg.insert(len(by) + 2, f"rounds to {metric} ≥ {target:g}", tt["rounds"].to_numpy())
    return agg.rename(
        columns={
            "rounds": "rounds run",
            "virtual_time_s": "virtual time (s)",
            "final_accuracy": "final accuracy",
            "final_ua_mean": "final mean UA",
            "traffic_mb": "traffic (MB)",
            "energy_kj": "device energy (kJ)",
            "straggler_pct": "stragglers (% of selected)",
            "dropped_pct": "dropped (% of selected)",
        }
    )


def _cards(rs: RunSet, metric: str, target: float | None) -> str:
    summ = summary_table(rs)
    cards = [
        ("Runs", f"{len(rs.runs)}"),
        ("Virtual time (mean)", f"{summ['virtual_time_s'].mean():,.1f} s"),
        ("Traffic (mean)", f"{(summ['bytes_up'] + summ['bytes_down']).mean() / 1e6:,.2f} MB"),
        ("Device energy (mean)", f"{summ['energy_j'].mean() / 1e3:,.2f} kJ"),
    ]
    sel = summ["participants"].sum()
    if sel:
        cards.append(
            (
                "Stragglers / drop-outs",
                f"{100 * summ['stragglers'].sum() / sel:.1f} % / "
                f"{100 * summ['dropped'].sum() / sel:.1f} %",
            )
        )
    if target is not None:
        tt = target_table(rs, metric, target, by=["label"] if not rs.grid_keys else None)
        best = [t for t in tt["time_s"] if t != NOT_REACHED]
        cards.append((f"Time to {metric} ≥ {target:g}", f"{len(best)}/{len(tt)} configs reached"))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card">{html.escape(k)}<b>{html.escape(v)}</b></div>' for k, v in cards
        )
        + "</div>\n"
    )


def write_report(
    run_or_sweep_dir: Path,
    out: Path | None = None,
    metric: str | None = None,
    target: float | None = None,
    confidence: float = 0.95,
) -> Path:
    """Write one self-contained HTML report of a run folder or a sweep folder.

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
        Coverage of the intervals over seeds.

    Returns
    -------
    Path
        The written file (written to a temporary name, then renamed).
    """
    src = Path(run_or_sweep_dir)
    rs = load(src)
    if not rs.runs:
        raise FileNotFoundError(f"{src}: no complete runs to report on")
    out = Path(out) if out is not None else src / "report.html"
    metric = metric or _metric_of(rs)
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
        f"seconds. Intervals are {confidence:.0%} Student-t intervals over seeds.</p>\n",
    ]
    parts.append(
        '<h2>Scenario</h2>\n<table class="kv">'
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in _scenario_rows(rs)
        )
        + "</table>\n"
    )

    parts.append("<h2>Key figures</h2>\n")
    parts.append(_cards(rs, metric, target))
    if target is not None:
        parts.append(
            f'<p class="note">Target: {metric} ≥ {target:g} ({html.escape(target_src)}).'
            f" “{NOT_REACHED}” means no seed reached it within the run.</p>\n"
        )
    parts.append(_table(_key_figures(rs, metric, target, by)))

    parts.append("<h2>Learning curves</h2>\n")
    curve_metrics = [
        m
        for m in ("accuracy", "ua_mean")
        if any(m in r.rounds and r.rounds[m].notna().any() for r in rs.runs)
    ]
    parts.append(
        _img(
            plot_curves(rs, metrics=curve_metrics or ["accuracy"]),
            "learning curves",
            "Accuracy and mean user-model accuracy against virtual time (left) and "
            "round (right); lines are means over seeds, bands their intervals.",
        )
    )
    parts.append(
        _img(plot_metric(rs, "round_time_s", x="round"), "round time", "Virtual time per round.")
    )

    parts.append("<h2>Cost</h2>\n")
    parts.append(
        _img(
            plot_cumulative(rs),
            "cumulative bytes and energy",
            "Cumulative traffic and device energy against virtual time.",
        )
    )

    parts.append("<h2>Where round time goes</h2>\n")
    parts.append(
        _img(
            plot_time_breakdown(rs),
            "time breakdown",
            "Mean per-round time by phase (device download, compute, upload; edge; "
            "cloud; waiting for the round to close).",
        )
    )
    parts.append(_table(time_breakdown_table(rs)))

    if any(not r.device_ua.empty for r in rs.runs):
        parts.append("<h2>User-model accuracy across devices</h2>\n")
        parts.append(
            _img(
                plot_ua_boxplot(rs),
                "UA box plots",
                "Per-device user-model accuracy at each run's last evaluated version, "
                "seeds pooled; whiskers min–max, triangle the mean.",
            )
        )

    parts.append("<h2>Stragglers: device timelines</h2>\n")
    shown: set[str] = set()
    for run in rs.runs:
        if run.label in shown or run.device_rounds.empty or len(shown) >= 4:
            continue
        shown.add(run.label)
        rnd = pick_timeline_round(run)
        parts.append(
            _img(
                plot_device_timeline(run, rnd),
                f"device timeline {run.run_id}",
                f"{run.run_id}, round {rnd} (the round with the most stragglers and "
                "drop-outs): each device's download, compute, upload and wait.",
            )
        )

    if target is not None:
        parts.append(f"<h2>Rounds and time to {html.escape(metric)} ≥ {target:g}</h2>\n")
        parts.append(_table(target_table(rs, metric, target, by=by, confidence=confidence)))
    parts.append("<h2>All runs</h2>\n")
    parts.append(_table(summary_table(rs)))
    parts.append("</body></html>\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out
