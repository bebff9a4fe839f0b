"""Matplotlib figures of runs: curves, cost, time breakdown, UA boxes, Gantt, edge utilisation."""

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

from fedsim.analysis.load import RunData, RunSet, rounds_frame
from fedsim.analysis.metrics import MIN_SEEDS_FOR_CI, mean_ci, metric_range
from fedsim.analysis.tables import PHASE_LABELS, PHASES, time_breakdown

__all__ = [
    "METRIC_LABELS",
    "save_figure",
    "plot_metric",
    "plot_curves",
    "plot_cumulative",
    "plot_time_breakdown",
    "plot_ua_boxplot",
    "plot_device_timeline",
    "plot_edge_utilisation",
    "pick_timeline_round",
    "pick_offload_round",
    "device_rounds_with_plans",
    "has_offloading",
    "edge_names",
    "edge_utilisation",
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
    "oom": "#6a3d9a",
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


def _band(
    values: np.ndarray,
    band: str,
    confidence: float,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[np.ndarray, ...]:
    """Return mean, low and high over axis 0 (seeds) per column, ignoring NaN.

    ``low`` and ``high`` are clipped to ``bounds``, the quantity's physical range.
    """
    cols = values.shape[1]
    mean, low, high = (np.full(cols, np.nan) for _ in range(3))
    for j in range(cols):
        col = values[:, j][~np.isnan(values[:, j])]
        if col.size == 0:
            continue
        if band == "minmax":
            mean[j], low[j], high[j] = col.mean(), col.min(), col.max()
        else:
            ci = mean_ci(col, confidence, bounds)
            mean[j], low[j], high[j] = ci.mean, ci.low, ci.high
    return mean, np.clip(low, *bounds), np.clip(high, *bounds)


def _seeds_note(n_seeds: int, band: str, drawn: str) -> str:
    """Return the legend's note on the seeds and, if it differs from ``band``, the band."""
    if n_seeds < 2:
        return ""
    if drawn != band:
        return f" ({n_seeds} seeds, band min–max)"
    return f" ({n_seeds} seeds)"


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
        Bands are clipped to the metric's physical range (accuracies in [0, 1]; times,
        bytes and energy at least 0: :func:`fedsim.analysis.metrics.metric_range`). A
        configuration with fewer than 3 seeds gets the min-max band instead of ``ci`` (a
        95 % interval over 2 seeds is ±12.7 standard errors); its legend says so.
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
    low_bound, high_bound = metric_range(metric)
    bounds = (low_bound / scale, high_bound / scale)
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
            n_seeds = g["run_id"].nunique()
            kind = "minmax" if band == "ci" and n_seeds < MIN_SEEDS_FOR_CI else band
            mean, low, high = _band(mat, kind, confidence, bounds)
            color = f"C{i % 10}"
            label = _group_label(by, values) + _seeds_note(n_seeds, band, kind)
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


def device_rounds_with_plans(run: RunData) -> pd.DataFrame:
    """Return the run's device rows with ``plan`` as text (``local``, ``full``, ``split(k)``).

    :func:`analysis.load.load_run` parses every column it does not know as a number, which
    turns the plan labels into NaN; they are then read again from the run's
    ``device_rounds.csv`` (rows in file order, as ``load_run`` keeps them). An empty plan
    reads ``local``. Runs written before offloading (no ``plan`` column) come back as they
    are.
    """
    dr = run.device_rounds
    if "plan" not in dr.columns:
        return dr
    plans = dr["plan"]
    if len(dr) and plans.isna().all():
        try:
            raw = pd.read_csv(
                run.run_dir / "device_rounds.csv",
                usecols=["plan"],
                dtype=str,
                keep_default_na=False,
            )["plan"]
        except (OSError, ValueError):
            raw = None
        if raw is not None and len(raw) == len(dr):
            plans = pd.Series(raw.to_numpy(), index=dr.index)
    text = plans.astype(object).where(plans.notna(), "").astype(str).str.strip()
    return dr.assign(plan=text.where(text != "", "local"))


def has_offloading(run: RunData) -> bool:
    """Return True if the run's device rows carry an offloading ``plan`` column."""
    return "plan" in run.device_rounds.columns


def offloaded(run: RunData) -> bool:
    """Return True if any device of the run took a plan other than ``local``."""
    return has_offloading(run) and bool(run.device_rounds["plan"].ne("local").any())


def pick_offload_round(run: RunData) -> int | None:
    """Return the round with the most offloaded devices (the first on ties), or None."""
    dr = device_rounds_with_plans(run)
    if dr.empty or "plan" not in dr.columns:
        return None
    offloaded = dr["plan"].ne("local").groupby(dr["round"], sort=True).sum()
    return int(offloaded.idxmax()) if offloaded.max() > 0 else None


def edge_names(run: RunData) -> dict[str, str]:
    """Return each edge's scenario name by the ``edge_id`` of the result files (its index)."""
    edges = (run.scenario.get("topology") or {}).get("edges") or []
    return {str(i): str(e.get("name", i)) for i, e in enumerate(edges) if isinstance(e, dict)}


def _edge_order(edge_id: str) -> tuple[int, int, str]:
    return (0, int(edge_id), "") if edge_id.isdigit() else (1, 0, edge_id)


def _numeric(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(0.0, index=frame.index)
    return pd.to_numeric(frame[col], errors="coerce").fillna(0.0)


_UTIL_COLUMNS = [
    "round", "edge_id", "edge", "round_start_s", "virtual_time_s", "duration_s",
    "offload_busy_s", "edge_tier_s", "utilisation",
]  # fmt: skip


def edge_utilisation(run: RunData) -> pd.DataFrame:
    """Return each edge's utilisation in each round of a run.

    Per round and edge, ``utilisation = (offload_busy_s + edge_tier_s) / duration_s``:

    * ``offload_busy_s`` — the sum over the edge's devices of ``edge_compute_s −
      edge_queue_s``: the seconds the edge's compute worked for offloaded training,
      counted at its full rate. ``edge_compute_s`` alone would count a device's seconds on
      a shared edge as if it had the edge to itself (two devices training together for 1 s
      at half the rate each would read 200 %); ``edge_queue_s`` is the part of them lost to
      sharing.
    * ``edge_tier_s`` — the round's ``edge_s`` (aggregation and upload to the cloud, after
      the round closes) for every edge with at least one completed device that round, 0
      otherwise: ``edge_s`` is per round, not per edge, and includes the backhaul upload,
      so this part is an upper bound.
    * ``duration_s`` — ``virtual_time_s − round_start_s`` of ``rounds.csv``.

    Every edge that has device rows in the run gets a row for every round. Runs without
    ``edge_compute_s`` (written before offloading) give an empty frame.
    """
    dr, rr = run.device_rounds, run.rounds
    needed = {"round", "round_start_s", "virtual_time_s"}
    if dr.empty or rr.empty or "edge_compute_s" not in dr.columns or not needed <= set(rr):
        return pd.DataFrame(columns=_UTIL_COLUMNS)
    dev = pd.DataFrame(
        {
            "round": pd.to_numeric(dr["round"], errors="coerce").astype(float),
            "edge_id": dr["edge_id"].astype(str),
            "offload_busy_s": (_numeric(dr, "edge_compute_s") - _numeric(dr, "edge_queue_s")).clip(
                lower=0.0
            ),
            "kept": dr["status"].astype(str).eq("completed"),
        }
    )
    per_edge = (
        dev.groupby(["round", "edge_id"], sort=False)
        .agg(offload_busy_s=("offload_busy_s", "sum"), kept=("kept", "any"))
        .reset_index()
    )
    rounds = pd.DataFrame(
        {
            "round": pd.to_numeric(rr["round"], errors="coerce").astype(float),
            "round_start_s": pd.to_numeric(rr["round_start_s"], errors="coerce"),
            "virtual_time_s": pd.to_numeric(rr["virtual_time_s"], errors="coerce"),
            "edge_s": _numeric(rr, "edge_s"),
        }
    ).drop_duplicates("round")
    edges = sorted(dev["edge_id"].unique(), key=_edge_order)
    grid = pd.MultiIndex.from_product(
        [rounds["round"].to_numpy(), edges], names=["round", "edge_id"]
    ).to_frame(index=False)
    util = grid.merge(rounds, on="round", how="left").merge(
        per_edge, on=["round", "edge_id"], how="left"
    )
    util["offload_busy_s"] = util["offload_busy_s"].fillna(0.0)
    kept = util["kept"].astype("boolean").fillna(False).astype(bool)
    util["edge_tier_s"] = util["edge_s"].where(kept, 0.0)
    util["duration_s"] = util["virtual_time_s"] - util["round_start_s"]
    util["utilisation"] = (util["offload_busy_s"] + util["edge_tier_s"]) / util["duration_s"].where(
        util["duration_s"] > 0
    )
    names = edge_names(run)
    util["edge"] = [names.get(e, e) for e in util["edge_id"]]
    util["round"] = util["round"].astype(int)
    util["_order"] = [_edge_order(e) for e in util["edge_id"]]
    util = util.sort_values(["_order", "round_start_s"], kind="stable")
    return util[_UTIL_COLUMNS].reset_index(drop=True)


def plot_edge_utilisation(run: RunData, ax: Axes | None = None) -> Figure:
    """Step plot of each edge's utilisation per round against virtual time.

    Solid: ``(offload_busy_s + edge_tier_s) / round duration``; dotted: the offloaded
    training alone (see :func:`edge_utilisation` for the definition). The legend gives
    each edge's mean over the run (total busy seconds over total time). Runs without the
    offloading columns show a note instead.
    """
    util = edge_utilisation(run)
    fig, ax = _new_axes(ax, (9.0, 3.6))
    if util.empty:
        ax.text(
            0.5,
            0.5,
            "no offloading columns (edge_compute_s) in this run",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return fig
    top = 100.0
    for i, (_, g) in enumerate(util.groupby("edge_id", sort=False)):
        g = g.dropna(subset=["round_start_s", "virtual_time_s"])
        if g.empty:
            continue
        xs = np.append(g["round_start_s"].to_numpy(float), g["virtual_time_s"].to_numpy(float)[-1])
        dur = g["duration_s"].where(g["duration_s"] > 0)
        total = 100 * g["utilisation"].to_numpy(float)
        offload = 100 * (g["offload_busy_s"] / dur).to_numpy(float)
        busy = float((g["offload_busy_s"] + g["edge_tier_s"]).sum())
        span = float(dur.sum())
        mean = 100 * busy / span if span > 0 else math.nan
        name = str(g["edge"].iloc[0])
        color = f"C{i % 10}"
        ax.step(
            xs,
            np.append(total, total[-1]),
            where="post",
            color=color,
            label=f"edge {name}: offloaded training + edge tier (mean {mean:.1f} %)",
        )
        ax.step(
            xs,
            np.append(offload, offload[-1]),
            where="post",
            color=color,
            linestyle=":",
            label=f"edge {name}: offloaded training only",
        )
        if np.isfinite(total).any():
            top = max(top, float(np.nanmax(total)))
    ax.set_ylim(0, top * 1.05)
    ax.set_xlabel("Virtual time (s)")
    ax.set_ylabel("Edge utilisation (% of round)")
    ax.set_title(f"{run.run_id}: edge utilisation per round")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, alpha=0.3)
    return fig


_OFFLOAD_COLOR = "#c51b8a"
_OOM_COLOR = "#6a3d9a"
#: How each kind of Gantt segment is drawn: face colour, optional hatch, legend label.
_SEGMENTS: dict[str, dict[str, str]] = {
    "fetch": {
        "face": "#f0f0f0",
        "hatch": "....",
        "hatch_color": "#969696",
        "label": "Fetch (idle: the edge fetches the model)",
    },
    "download_s": {"face": _PHASE_COLORS["download_s"], "label": PHASE_LABELS["download_s"]},
    "compute_s": {"face": _PHASE_COLORS["compute_s"], "label": PHASE_LABELS["compute_s"]},
    "upload_s": {"face": _PHASE_COLORS["upload_s"], "label": PHASE_LABELS["upload_s"]},
    "wait_s": {"face": _PHASE_COLORS["wait_s"], "label": PHASE_LABELS["wait_s"]},
    "data_up": {
        "face": _PHASE_COLORS["upload_s"],
        "hatch": "xx",
        "hatch_color": "white",
        "label": "Upload of training data (full)",
    },
    "full": {
        "face": "white",
        "outline": _OFFLOAD_COLOR,
        "linestyle": "--",
        "label": "Trained on the edge (full)",
    },
    "split": {
        "face": "#c6dbef",
        "hatch": "////",
        "hatch_color": _OFFLOAD_COLOR,
        "label": "Device + edge taking turns (split)",
    },
    "edge_full": {"face": _OFFLOAD_COLOR, "label": "Edge lane: training a full device"},
    "edge_split": {
        "face": "#fbb4d9",
        "hatch": "////",
        "hatch_color": _OFFLOAD_COLOR,
        "label": "Edge lane: a split device's batches",
    },
    "edge_tier": {"face": _PHASE_COLORS["edge_s"], "label": "Edge lane: edge tier (edge_s)"},
}
_BASE_SEGMENTS = ("download_s", "compute_s", "upload_s", "wait_s")


def _value(rec: dict[str, object], key: str) -> float:
    v = rec.get(key)
    if v is None:
        return 0.0
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f) else f


def _segments(rec: dict[str, object], plan: str) -> list[tuple[str, float]]:
    """Return a device's phases in the order they happened, as (segment kind, seconds).

    ``fetch_s`` is the idle head of ``download_s``. A ``full`` device first uploads its
    training data (``upload_s``), then waits for the edge's model, then the edge trains
    for it (``compute_s``); ``split`` and ``local`` devices fetch, download, compute,
    upload.
    """
    download = _value(rec, "download_s")
    fetch = min(_value(rec, "fetch_s"), download)
    compute, upload, wait = (_value(rec, k) for k in ("compute_s", "upload_s", "wait_s"))
    if plan == "full":
        return [
            ("data_up", upload),
            ("fetch", fetch),
            ("download_s", download - fetch),
            ("full", compute),
            ("wait_s", wait),
        ]
    middle = "compute_s" if plan == "local" else "split"
    return [
        ("fetch", fetch),
        ("download_s", download - fetch),
        (middle, compute),
        ("upload_s", upload),
        ("wait_s", wait),
    ]


def _bar(
    ax: Axes,
    y: float,
    left: float,
    width: float,
    height: float,
    kind: str,
    outline: str | None = None,
    linewidth: float = 0.3,
) -> None:
    style = _SEGMENTS[kind]
    ax.barh(
        y,
        width,
        left=left,
        height=height,
        color=style["face"],
        edgecolor=outline or style.get("outline", "black"),
        linewidth=max(linewidth, 0.9) if "outline" in style else linewidth,
        linestyle=style.get("linestyle", "-"),
    )
    if "hatch" in style:  # a second, unfilled bar: the hatch in its own colour
        ax.barh(
            y,
            width,
            left=left,
            height=height,
            facecolor="none",
            edgecolor=style["hatch_color"],
            linewidth=0,
            hatch=style["hatch"],
        )


def plot_device_timeline(run: RunData, round: int | None = None, ax: Axes | None = None) -> Figure:
    """Gantt chart of one round: each device's phases, and offloaded work on edge lanes.

    Each device's lane, labelled ``id · profile/link`` (and the plan when offloaded),
    shows in the order they happened the idle fetch of the edge's model (when the run
    records ``fetch_s``), download, compute, upload and wait. Lanes shrink so that the
    chart stays under about 12 inches (1,200 px at the report's 100 dpi) however many
    devices the round has; past about 100 lanes only every n-th lane is labelled.
    Stragglers are outlined in red, drop-outs end in a red cross, discarded reports
    (over-selection) are outlined in orange, devices that cannot hold the model (``oom``)
    are a purple diamond at their start; the dashed red line is the round deadline
    (``rounds.deadline_s`` after the round start), the black line the round's end.

    With offloading (a ``plan`` column), each edge that trains for devices of the round
    gets a lane below the devices', one thin bar per offloaded device, labelled with its id
    and ``edge_compute_s``. A ``full`` device uploads its training data, waits for the
    edge's model, and the edge trains for it: drawn on the edge's lane, the device's lane
    only outlined. A ``split`` device's compute interval is drawn on both lanes (hatched):
    device and edge take turns batch by batch, and the per-batch interleaving is not in the
    result files (the edge computed ``edge_compute_s`` of that interval). Edge lanes end
    with the round's ``edge_s`` (aggregation and upload to the cloud, after the close).

    Parameters
    ----------
    run : RunData
        One run.
    round : int, optional
        The ``round`` value of ``device_rounds.csv`` to draw (fedsim numbers rounds from
        0); default :func:`pick_timeline_round`.
    ax : Axes, optional
        Draw into this axes (the legend then goes to its right; on a new figure it goes
        below the chart).

    Returns
    -------
    matplotlib.figure.Figure
    """
    rnd = pick_timeline_round(run) if round is None else round
    dr = device_rounds_with_plans(run)
    rows = dr[dr["round"] == rnd] if rnd is not None else dr.iloc[0:0]
    rows = rows.sort_values(["start_s", "device_id"], kind="stable")
    records = rows.to_dict("records")
    plans = [str(r.get("plan", "local")) for r in records]
    names = edge_names(run)
    offloaded: dict[str, list[tuple[str, float, float, str, str]]] = {}
    for rec, plan in zip(records, plans, strict=True):
        if plan != "local" and str(rec["status"]) != "oom":
            offloaded.setdefault(str(rec["edge_id"]), [])
    lane_ids = sorted(offloaded, key=_edge_order)
    lane_h = {e: 0.0 for e in lane_ids}
    for rec, plan in zip(records, plans, strict=True):
        e = str(rec["edge_id"])
        if e in lane_h:
            lane_h[e] += 0.0 if plan == "local" or str(rec["status"]) == "oom" else 0.45
    lane_h = {e: max(1.0, h) for e, h in lane_h.items()}
    n = len(records)
    extent = n + sum(lane_h.values()) + 0.4 * len(lane_ids)
    own_figure = ax is None
    pitch = _lane_pitch_in(extent)
    fig, ax = _new_axes(ax, (9.0, max(3.0, pitch * extent + 2.6)))
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
    used: set[str] = set()
    any_oom = False
    for y, (rec, plan) in enumerate(zip(records, plans, strict=True)):
        t = float(rec["start_s"])
        end = float(rec["end_s"]) if not pd.isna(rec["end_s"]) else math.inf
        status = str(rec["status"])
        if status == "oom":
            any_oom = True
            ax.plot(
                [t],
                [y],
                marker="D",
                color=_OOM_COLOR,
                markersize=6,
                linestyle="none",
                clip_on=False,
            )
            ax.annotate(
                "oom: cannot hold the model, never trains",
                (t, y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize="x-small",
                color=_OOM_COLOR,
            )
            continue
        for kind, d in _segments(rec, plan):
            if kind != "wait_s" or status != "completed":  # a completed device waits after end_s
                d = max(0.0, min(d, end - t))
            if d > 0:
                _bar(
                    ax,
                    y,
                    t,
                    d,
                    0.7,
                    kind,
                    outline=_STATUS_EDGE.get(status) if status != "completed" else None,
                    linewidth=1.4 if status != "completed" else 0.3,
                )
                used.add(kind)
                if kind in ("full", "split"):
                    note = f"{rec['device_id']}: edge {_value(rec, 'edge_compute_s'):.2g} s"
                    offloaded[str(rec["edge_id"])].append((kind, t, d, note, status))
            t += d
        if status == "dropped" and math.isfinite(end):
            ax.plot([end], [y], marker="X", color="#d62728", markersize=8, linestyle="none")
    rr = run.rounds[run.rounds["round"] == rnd] if "round" in run.rounds else run.rounds.iloc[:0]
    step = _label_step(pitch)
    ticks: list[float] = list(range(0, n, step))
    labels = [_device_label(rec, plan) for rec, plan in zip(records, plans, strict=True)][::step]
    cursor = n - 0.5 + 0.3
    if lane_ids:
        ax.axhline(cursor - 0.15, color="#636363", linewidth=0.8)
    edge_s = float(_numeric(rr, "edge_s").iloc[0]) if len(rr) else 0.0
    close = (
        float(rr["virtual_time_s"].iloc[0]) - edge_s - float(_numeric(rr, "cloud_s").iloc[0])
        if len(rr)
        else math.nan
    )
    for e in lane_ids:
        h = lane_h[e]
        centre = cursor + h / 2
        if edge_s > 0 and math.isfinite(close):
            _bar(ax, centre, close, edge_s, h - 0.2, "edge_tier")
            used.add("edge_tier")
        items = offloaded[e]
        sub = (h - 0.2) / max(1, len(items))
        for k, (kind, left, width, note, status) in enumerate(items):
            yk = cursor + 0.1 + sub * (k + 0.5)
            _bar(
                ax,
                yk,
                left,
                width,
                sub * 0.85,
                f"edge_{kind}",
                outline=_STATUS_EDGE.get(status) if status != "completed" else None,
                linewidth=1.0 if status != "completed" else 0.3,
            )
            used.add(f"edge_{kind}")
            if sub >= 0.3:
                ax.annotate(
                    note,
                    (left, yk),
                    xytext=(2, 0),
                    textcoords="offset points",
                    ha="left",
                    va="center",
                    fontsize=6,
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        ticks.append(centre)
        labels.append(f"edge {names.get(e, e)}")
        cursor += h + 0.4
    ax.set_yticks(ticks, labels, fontsize=min(8.0, max(5.0, 0.8 * 72 * pitch * step)))
    for label in ax.get_yticklabels()[len(range(0, n, step)) :]:
        label.set_fontweight("bold")
    ax.set_ylim(cursor - 0.2 if lane_ids else n - 0.5, -0.6)
    round_start = float(rr["round_start_s"].iloc[0]) if len(rr) else float(rows["start_s"].min())
    deadline = (run.scenario.get("rounds") or {}).get("deadline_s")
    kinds = (["fetch"] if "fetch" in used else []) + list(_BASE_SEGMENTS)
    kinds += [k for k in _SEGMENTS if k not in kinds and k in used]
    handles: list[Line2D | Patch] = []
    for kind in kinds:
        style = _SEGMENTS[kind]
        handles.append(
            Patch(
                facecolor=style["face"],
                edgecolor=style.get("hatch_color", style.get("outline", "none")),
                hatch=style.get("hatch"),
                linestyle="--" if style.get("linestyle") == "--" else "-",
                label=style["label"],
            )
        )
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
    if any_oom:
        handles.append(Line2D([], [], marker="D", color=_OOM_COLOR, linestyle="none", label="oom"))
    counts = rows["status"].value_counts()
    n_off = sum(p != "local" for p in plans)
    ax.set_title(
        f"{run.run_id}: round {rnd} — "
        + ", ".join(
            f"{counts.get(s, 0)} {s}"
            for s in ("completed", "straggler", "dropped", "discarded", "oom")
            if counts.get(s, 0)
        )
        + (f"; {n_off} offloaded" if n_off else "")
    )
    ax.set_xlabel("Virtual time (s)")
    ylabel = "Device · profile/link" + (" · plan / edge" if lane_ids else "")
    ax.set_ylabel(ylabel + (f" (every {step}th labelled)" if step > 1 else ""))
    if own_figure:  # below the chart: a tall chart keeps its full width
        fig.legend(handles=handles, fontsize="small", loc="outside lower center", ncols=3)
    else:
        ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="x", alpha=0.3)
    return fig


#: Most inches of lanes in a Gantt chart: 100 devices get 0.09 in each, not 0.28 in.
_MAX_LANES_IN = 9.0


def _lane_pitch_in(extent: float) -> float:
    """Return the height in inches of one device lane when ``extent`` lanes are drawn."""
    return min(0.28, _MAX_LANES_IN / max(extent, 1.0))


def _label_step(pitch_in: float) -> int:
    """Return n such that labelling every n-th device lane leaves at least 6 pt per label."""
    return max(1, math.ceil(6.0 / (72 * pitch_in)))


def _device_label(rec: dict[str, object], plan: str) -> str:
    """Return a device lane's label: ``id · profile/link`` and the plan when offloaded."""
    text = f"{rec['device_id']} · {rec.get('profile', '?')}/{rec.get('link', '?')}"
    return text if plan == "local" else f"{text} · {plan}"
