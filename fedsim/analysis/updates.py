"""Asynchronous updates (``updates.csv``): their fates, staleness and weights."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedsim.analysis.load import RunData, RunSet

__all__ = ["FATES", "update_routes", "update_fates_table", "plot_staleness"]

#: The fates of an update (docs/async.md), in table order: applied into a version;
#: discarded as staler than ``max_staleness``; its device went off line; cut by
#: ``deadline_s``; its device cannot hold the model; not yet applied when the run ended.
FATES = ("applied", "stale", "dropped", "timed_out", "oom", "in_flight", "queued", "buffered")
_APPLIED_COLOR, _STALE_COLOR = "#3182bd", "#d62728"


def _async_runs(runs: RunSet | Sequence[RunData]) -> list[RunData]:
    return [r for r in (runs.runs if isinstance(runs, RunSet) else runs) if r.is_async]


def update_routes(runs: RunSet | Sequence[RunData]) -> pd.DataFrame:
    """Return the asynchronous runs' updates, one row each, with their route.

    Columns: ``configuration`` (the run's label), ``run_id``, ``route`` (``source → server``:
    ``device → cloud``, or under ``rounds.edges`` ``device → edge`` and ``edge → cloud``),
    ``fate``, ``staleness`` (versions of the receiving server) and ``weight``.
    Synchronous runs are left out.
    """
    frames = []
    for run in _async_runs(runs):
        u = run.updates
        frames.append(
            pd.DataFrame(
                {
                    "configuration": run.label,
                    "run_id": run.run_id,
                    "route": u["source"].astype(str) + " → " + u["server"].astype(str),
                    "fate": u["fate"].astype(str),
                    "staleness": pd.to_numeric(u["staleness"], errors="coerce"),
                    "weight": pd.to_numeric(u["weight"], errors="coerce"),
                }
            )
        )
    columns = ["configuration", "run_id", "route", "fate", "staleness", "weight"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def update_fates_table(runs: RunSet | Sequence[RunData]) -> pd.DataFrame:
    """Return the updates' fates and staleness per configuration and route.

    One row per configuration (runs sharing a label are its seeds) and route. Counts (all
    updates and each fate that occurs; ``applied`` always) are **per run, the mean over
    the configuration's seeds**; ``applied (%)`` is their share; the median, 90th
    percentile and maximum staleness and the mean weight are over the applied updates of
    **all seeds pooled**. Staleness is in versions of the receiving server, taken when it
    handled the update. Empty when no run is asynchronous.
    """
    runs_list = _async_runs(runs)
    frame = update_routes(runs_list)
    if frame.empty:
        return pd.DataFrame()
    n_runs = Counter(r.label for r in runs_list)
    seen = set(frame["fate"])
    fates = [f for f in FATES if f == "applied" or f in seen] + sorted(seen - set(FATES))
    rows = []
    for (config, route), g in frame.groupby(["configuration", "route"], sort=False):
        n = n_runs[str(config)]
        counts = g["fate"].value_counts()
        applied = g[g["fate"] == "applied"]
        staleness = applied["staleness"].dropna()
        row: dict[str, object] = {
            "configuration": config,
            "route": route,
            "runs": n,
            "updates": len(g) / n,
        }
        row.update({f: counts.get(f, 0) / n for f in fates})
        row["applied (%)"] = 100 * counts.get("applied", 0) / len(g)
        row["median staleness"] = staleness.median() if len(staleness) else math.nan
        row["p90 staleness"] = staleness.quantile(0.9) if len(staleness) else math.nan
        row["max staleness"] = staleness.max() if len(staleness) else math.nan
        row["mean weight"] = applied["weight"].mean() if len(applied) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _max_staleness(runs: Sequence[RunData], config: str) -> float | None:
    for run in runs:
        if run.label == config:
            value = (run.scenario.get("rounds") or {}).get("max_staleness")
            return None if value is None else float(value)
    return None


def plot_staleness(runs: RunSet | Sequence[RunData], max_panels: int = 12) -> Figure:
    """Histograms of the staleness of applied and discarded (``stale``) updates.

    One panel per configuration and route (seeds pooled; at most ``max_panels``), bars
    stacked: applied (blue) and discarded as staler than ``rounds.max_staleness`` (red),
    as a share of the panel's handled updates (applied + stale); the dashed line is
    ``max_staleness``. Bins are one version wide up to 150 versions, wider beyond.
    """
    runs_list = _async_runs(runs)
    frame = update_routes(runs_list)
    frame = frame[frame["fate"].isin(["applied", "stale"])].dropna(subset=["staleness"])
    panels = list(dict.fromkeys(zip(frame["configuration"], frame["route"], strict=True)))
    panels = panels[:max_panels]
    if not panels:
        fig = Figure(figsize=(6.4, 3.0), layout="constrained")
        fig.add_subplot().text(0.5, 0.5, "no applied or discarded updates", ha="center")
        return fig
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.4 if ncols == 1 else 11, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    limits = [_max_staleness(runs_list, str(config)) for config, _ in panels]
    top = max([float(frame["staleness"].max())] + [lim + 1 for lim in limits if lim is not None])
    width = max(1, math.ceil((top + 1) / 150))
    # bins of ``width`` versions, one edge at the first limit: no bin mixes kept and stale
    anchor = next((lim + 0.5 for lim in limits if lim is not None), -0.5)
    start = anchor - math.ceil((anchor + 0.5) / width) * width
    edges = np.arange(start, top + width + 0.5, width)
    show_route = any(route != "device → cloud" for _, route in panels)
    for ax, (config, route), limit in zip(axes, panels, limits, strict=False):
        g = frame[(frame["configuration"] == config) & (frame["route"] == route)]
        parts = [g.loc[g["fate"] == f, "staleness"].to_numpy(float) for f in ("applied", "stale")]
        ax.hist(
            parts,
            bins=edges,
            stacked=True,
            weights=[np.full(len(p), 100 / len(g)) for p in parts],
            color=[_APPLIED_COLOR, _STALE_COLOR],
            label=[f"applied ({len(parts[0]):,})", f"discarded as stale ({len(parts[1]):,})"],
        )
        if limit is not None:
            ax.axvline(limit + 0.5, color="black", linestyle="--", linewidth=1,
                       label=f"max_staleness = {limit:g}")  # fmt: skip
        ax.set_xlim(edges[0], edges[-1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{config} ({route})" if show_route else str(config), fontsize="medium")
        bins = "" if width == 1 else f", bins of {width}"
        ax.set_xlabel(f"Staleness (versions{bins})")
        ax.set_ylabel("% of handled updates")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig
