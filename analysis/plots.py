"""Matplotlib figures of runs: curves with seed bands, cost, time breakdown, UA boxes, Gantt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from analysis.load import RunData, RunSet, rounds_frame
from analysis.metrics import mean_ci
from analysis.tables import PHASE_LABELS, PHASES, time_breakdown

__all__ = [
    "METRIC_LABELS",
    "save_figure",
    "plot_metric",
    "plot_curves",
    "plot_cumulative",
    "plot_time_breakdown",
    "plot_ua_boxplot",
    "plot_device_timeline",
    "pick_timeline_round",
]

METRIC_LABELS = {
    "accuracy": "Global test accuracy",
    "loss": "Global test loss",
    "ua_mean": "Mean user-model accuracy (UA)",
    "ua_p10": "UA, 10th percentile",
    "ua_p50": "UA, median",
    "ua_p90": "UA, 90th percentile",
    "round_time_s": "Round time (virtual s)",
    "cum_bytes": "Cumulative bytes (up + down)",
    "cum_bytes_up": "Cumulative bytes up",
    "cum_bytes_down": "Cumulative bytes down",
    "cum_energy_j": "Cumulative device energy (J)",
    "virtual_time_s": "Virtual time (s)",
    "round_index": "Round",
}
_X_COLUMNS = {"time": "virtual_time_s", "round": "round_index"}
_PHASE_COLORS = {
    "download_s": "#9ecae1",
    "compute_s": "#3182bd",
    "upload_s": "#08519c",
    "edge_s": "#31a354",
    "cloud_s": "#756bb1",
    "wait_s": "#bdbdbd",
}
_STATUS_EDGE = {
    "completed": "black",
    "straggler": "#d62728",
    "dropped": "#d62728",
    "discarded": "#ff7f0e",
}


def _as_runset(runs: RunSet | Sequence[RunData] | RunData) -> RunSet:
    if isinstance(runs, RunSet):
        return runs
    if isinstance(runs, RunData):
        return RunSet(runs=[runs])
    return RunSet(runs=list(runs))


def _by(rs: RunSet, by: Sequence[str] | None) -> list[str]:
    return list(by) if by is not None else (list(rs.grid_keys) or ["label"])


def _group_label(by: Sequence[str], values: tuple[object, ...]) -> str:
    if list(by) == ["label"]:
        return str(values[0])
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(by, values, strict=True))


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.figure
        assert isinstance(fig, Figure)
        return fig, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(
    fig: Figure, path: str | Path, formats: Sequence[str] = ("png", "svg"), dpi: int = 120
) -> list[Path]:
    """Save ``fig`` once per format, as ``path`` with each suffix; return the files written."""
    base = Path(path)
    if base.suffix.lstrip(".") in ("png", "svg", "pdf"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = base.with_suffix(f".{fmt}")
        fig.savefig(target, format=fmt, dpi=dpi)
        written.append(target)
    return written


def _band(values: np.ndarray, band: str, confidence: float) -> tuple[np.ndarray, ...]:
    """Return mean, low and high over axis 0 (seeds) per column, ignoring NaN."""
    cols = values.shape[1]
    mean, low, high = (np.full(cols, np.nan) for _ in range(3))
    for j in range(cols):
        col = values[:, j][~np.isnan(values[:, j])]
        if col.size == 0:
            continue
        if band == "minmax":
            mean[j], low[j], high[j] = col.mean(), col.min(), col.max()
        else:
            ci = mean_ci(col, confidence)
            mean[j], low[j], high[j] = ci.mean, ci.low, ci.high
    return mean, low, high


def _series_on_grid(frame: pd.DataFrame, ycol: str, xcol: str, grid: np.ndarray) -> np.ndarray:
    """Return one row per run: ``ycol`` as a step function of ``xcol`` sampled on ``grid``."""
    rows = []
    for _, g in frame.groupby("run_id", sort=False):
        g = g[[xcol, ycol]].dropna().sort_values(xcol)
        xs, ys = g[xcol].to_numpy(float), g[ycol].to_numpy(float)
        idx = np.searchsorted(xs, grid, side="right") - 1
        vals = np.where(idx >= 0, ys[np.clip(idx, 0, None)] if len(ys) else np.nan, np.nan)
        if len(xs):
            vals = np.where(grid > xs[-1], np.nan, vals)  # a run says nothing past its end
        rows.append(vals)
    return np.vstack(rows) if rows else np.empty((0, len(grid)))


def plot_metric(
    runs: RunSet | Sequence[RunData] | RunData,
    metric: str = "accuracy",
    x: str = "time",
    by: Sequence[str] | None = None,
    band: str = "ci",
    confidence: float = 0.95,
    ax: Axes | None = None,
    scale: float = 1.0,
    ylabel: str | None = None,
) -> Figure:
    """Plot a per-round quantity of several configurations, mean over seeds with a band.

    Parameters
    ----------
    runs : RunSet, sequence of RunData or RunData
        The runs; runs sharing the ``by`` values are seeds of one configuration.
    metric : str
        A column of :func:`analysis.load.rounds_frame` (``accuracy``, ``ua_mean``,
        ``round_time_s``, ``cum_bytes``, ``cum_energy_j``, ...). Rounds without a value
        (not evaluated) are skipped.
    x : {"time", "round"}
        Against virtual time (seeds sampled as step functions on a common grid: the
        value at t is that of the latest model version at or before t) or against round.
    by : sequence of str, optional
        Configuration columns; default the grid keys, else ``label``.
    band : {"ci", "minmax", "none"}
        Student-t interval of the mean over seeds, min-max over seeds, or no band.
    confidence : float
        Coverage of the ``ci`` band.
    ax : Axes, optional
        Draw into this axes.
    scale : float
        Divide the metric by this (e.g. 1e6 for MB).
    ylabel : str, optional
        Axis label; default from :data:`METRIC_LABELS`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    xcol = _X_COLUMNS[x]
    fig, ax = _new_axes(ax)
    frame = rounds_frame(rs.runs, rs.grid_keys)
    if not frame.empty:
        frame = frame.assign(**{metric: pd.to_numeric(frame[metric], errors="coerce") / scale})
        for i, (values, group) in enumerate(frame.groupby(by, sort=False)):
            values = values if isinstance(values, tuple) else (values,)
            g = group.dropna(subset=[metric])
            if g.empty:
                continue
            if x == "round":  # exact values at each round
                grid = np.sort(g[xcol].unique()).astype(float)
                mat = np.vstack(
                    [
                        pd.Series(rg[metric].to_numpy(float), index=rg[xcol].to_numpy(float))
                        .reindex(grid)
                        .to_numpy(float)
                        for _, rg in g.groupby("run_id", sort=False)
                    ]
                )
            else:  # where every seed has a value: latest first point to earliest last point
                spans = g.groupby("run_id", sort=False)[xcol].agg(["min", "max"])
                xs = np.unique(g[xcol].to_numpy(float))
                grid = xs[(xs >= spans["min"].max()) & (xs <= spans["max"].min())]
                mat = _series_on_grid(g, metric, xcol, grid)
            mean, low, high = _band(mat, band, confidence)
            color = f"C{i % 10}"
            n_seeds = g["run_id"].nunique()
            label = _group_label(by, values) + (f" ({n_seeds} seeds)" if n_seeds > 1 else "")
            drawstyle = "steps-post" if x == "time" else "default"
            marker = "o" if x == "round" and len(grid) <= 30 else None
            ax.plot(
                grid,
                mean,
                color=color,
                label=label,
                drawstyle=drawstyle,
                marker=marker,
                markersize=3,
            )
            if band != "none" and n_seeds > 1:
                ax.fill_between(
                    grid,
                    low,
                    high,
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                    step="post" if x == "time" else None,
                )
    ax.set_xlabel(METRIC_LABELS[xcol])
    if x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel or METRIC_LABELS.get(metric, metric))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:
        ax.text(
            0.5, 0.5, f"no values of {metric}", ha="center", va="center", transform=ax.transAxes
        )
    return fig


def plot_curves(
    runs: RunSet | Sequence[RunData] | RunData,
    metrics: Sequence[str] = ("accuracy", "ua_mean"),
    by: Sequence[str] | None = None,
    band: str = "ci",
) -> Figure:
    """Plot each metric against virtual time (left) and against round (right)."""
    fig = Figure(figsize=(11, 3.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 2, squeeze=False)
    for row, metric in enumerate(metrics):
        for col, x in enumerate(("time", "round")):
            plot_metric(runs, metric, x=x, by=by, band=band, ax=axes[row][col])
    return fig


def plot_cumulative(
    runs: RunSet | Sequence[RunData] | RunData,
    x: str = "time",
    by: Sequence[str] | None = None,
    band: str = "ci",
) -> Figure:
    """Plot cumulative bytes (MB, up + down) and device energy (kJ) side by side."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_b, ax_e = fig.subplots(1, 2)
    plot_metric(
        runs,
        "cum_bytes",
        x=x,
        by=by,
        band=band,
        ax=ax_b,
        scale=1e6,
        ylabel="Cumulative traffic (MB, up + down)",
    )
    plot_metric(
        runs,
        "cum_energy_j",
        x=x,
        by=by,
        band=band,
        ax=ax_e,
        scale=1e3,
        ylabel="Cumulative device energy (kJ)",
    )
    return fig


def plot_time_breakdown(
    runs: RunSet | Sequence[RunData] | RunData,
    by: Sequence[str] | None = None,
    percent: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Stacked bars of the mean per-round time per configuration, one segment per phase.

    Device-tier phases (download, compute, upload) are blues, the edge green, the cloud
    purple, waiting grey. ``percent`` stacks shares of the round instead of seconds.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    tb = time_breakdown(rs, by)
    fig, ax = _new_axes(ax, (max(5.0, 1.2 * len(tb) + 3), 4.0))
    labels = [_group_label(by, tuple(r)) for r in tb[by].itertuples(index=False)]
    xs = np.arange(len(tb))
    bottom = np.zeros(len(tb))
    for p in PHASES:
        vals = tb[f"{p}_pct"].to_numpy(float) if percent else tb[p].to_numpy(float)
        ax.bar(
            xs,
            vals,
            bottom=bottom,
            color=_PHASE_COLORS[p],
            label=PHASE_LABELS[p],
            edgecolor="white",
            linewidth=0.5,
        )
        bottom += vals
    ax.set_xticks(
        xs, labels, rotation=20 if len(tb) > 3 else 0, ha="right" if len(tb) > 3 else "center"
    )
    ax.set_ylabel("Share of round time (%)" if percent else "Mean round time (virtual s)")
    ax.set_title("Per-round time by phase")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def plot_ua_boxplot(
    runs: RunSet | Sequence[RunData] | RunData,
    by: Sequence[str] | None = None,
    version: int | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Box plots of per-device user-model accuracy per configuration (PerFit Fig. 7 style).

    Each box pools the devices of all seeds of a configuration at one evaluated model
    version: ``version`` if given, else each run's last evaluated version. Whiskers span
    min to max; the green triangle is the mean.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    fig, ax = _new_axes(ax, (max(5.0, 1.1 * 4 + 2), 4.0))
    groups: dict[tuple[object, ...], list[float]] = {}
    for run in rs.runs:
        ua = run.device_ua
        key = tuple(run.params.get(k, "") if k != "label" else run.label for k in by)
        groups.setdefault(key, [])
        if ua.empty:
            continue
        v = version if version is not None else ua["version"].max()
        groups[key].extend(
            pd.to_numeric(ua.loc[ua["version"] == v, "accuracy"], errors="coerce").dropna().tolist()
        )
    labels = [_group_label(by, k) for k in groups]
    data = [np.asarray(v, float) for v in groups.values()]
    if any(len(d) for d in data):
        ax.boxplot(
            [d if len(d) else [math.nan] for d in data],
            tick_labels=labels,
            showmeans=True,
            whis=(0, 100),
        )
    else:
        ax.text(
            0.5,
            0.5,
            "no per-device UA (device_ua.csv empty)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_ylabel("User-model accuracy per device")
    ax.set_title(
        "UA across devices"
        + (f" (version {version})" if version is not None else " (last evaluated version)")
    )
    ax.grid(True, axis="y", alpha=0.3)
    if len(labels) > 3:
        ax.tick_params(axis="x", labelrotation=20)
    return fig


def pick_timeline_round(run: RunData) -> int | None:
    """Return the round with the most stragglers and drop-outs (the first on ties).

    Returns the first round if every device completed everywhere, None if there are
    no device rows.
    """
    dr = run.device_rounds
    if dr.empty:
        return None
    bad = dr["status"].isin(["straggler", "dropped"]).groupby(dr["round"], sort=True).sum()
    return int(bad.idxmax()) if bad.max() > 0 else int(bad.index[0])


def plot_device_timeline(run: RunData, round: int | None = None, ax: Axes | None = None) -> Figure:
    """Gantt chart of one round: each device's download, compute, upload and wait.

    Stragglers are outlined in red, drop-outs end in a red cross, discarded reports
    (over-selection) are outlined in orange; the dashed red line is the round deadline
    (``rounds.deadline_s`` after the round start), the black line the round's end.

    Parameters
    ----------
    run : RunData
        One run.
    round : int, optional
        The ``round`` value to draw; default :func:`pick_timeline_round`.
    ax : Axes, optional
        Draw into this axes.
    """
    rnd = pick_timeline_round(run) if round is None else round
    dr = run.device_rounds
    rows = dr[dr["round"] == rnd] if rnd is not None else dr.iloc[0:0]
    n = len(rows)
    fig, ax = _new_axes(ax, (9.0, max(2.5, 0.28 * n + 1.5)))
    if n == 0:
        ax.text(
            0.5,
            0.5,
            "no device rows for this round",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return fig
    rows = rows.sort_values(["start_s", "device_id"], kind="stable")
    for y, rec in enumerate(rows.to_dict("records")):
        t = float(rec["start_s"])
        end = float(rec["end_s"]) if not pd.isna(rec["end_s"]) else math.inf
        status = str(rec["status"])
        for p in ("download_s", "compute_s", "upload_s", "wait_s"):
            d = rec.get(p)
            d = 0.0 if d is None or pd.isna(d) else float(d)
            if p != "wait_s" or status != "completed":  # a completed device waits after end_s
                d = max(0.0, min(d, end - t))
            if d > 0:
                ax.barh(
                    y,
                    d,
                    left=t,
                    height=0.7,
                    color=_PHASE_COLORS[p],
                    edgecolor=_STATUS_EDGE.get(status, "black"),
                    linewidth=1.4 if status != "completed" else 0.3,
                )
            t += d
        if status == "dropped" and math.isfinite(end):
            ax.plot([end], [y], marker="X", color="#d62728", markersize=8, linestyle="none")
    ax.set_yticks(range(n), [str(d) for d in rows["device_id"]], fontsize="small")
    ax.invert_yaxis()
    rr = run.rounds[run.rounds["round"] == rnd] if "round" in run.rounds else run.rounds.iloc[:0]
    round_start = float(rr["round_start_s"].iloc[0]) if len(rr) else float(rows["start_s"].min())
    deadline = (run.scenario.get("rounds") or {}).get("deadline_s")
    handles: list[Line2D | Patch] = [
        Patch(color=_PHASE_COLORS[p], label=PHASE_LABELS[p])
        for p in ("download_s", "compute_s", "upload_s", "wait_s")
    ]
    if deadline is not None:
        ax.axvline(round_start + float(deadline), color="#d62728", linestyle="--")
        handles.append(Line2D([], [], color="#d62728", linestyle="--", label="deadline"))
    if len(rr):
        ax.axvline(float(rr["virtual_time_s"].iloc[0]), color="black", linewidth=1)
        handles.append(Line2D([], [], color="black", label="round end"))
    handles.append(
        Patch(facecolor="white", edgecolor="#d62728", linewidth=1.4, label="straggler / dropped")
    )
    handles.append(Line2D([], [], marker="X", color="#d62728", linestyle="none", label="drop-out"))
    if (rows["status"] == "discarded").any():
        handles.append(
            Patch(facecolor="white", edgecolor="#ff7f0e", linewidth=1.4, label="discarded")
        )
    counts = rows["status"].value_counts()
    ax.set_title(
        f"{run.run_id}: round {rnd} — "
        + ", ".join(
            f"{counts.get(s, 0)} {s}"
            for s in ("completed", "straggler", "dropped", "discarded")
            if counts.get(s, 0)
        )
    )
    ax.set_xlabel("Virtual time (s)")
    ax.set_ylabel("Device")
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="x", alpha=0.3)
    return fig
