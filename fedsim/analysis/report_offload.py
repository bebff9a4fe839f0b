"""The report's Offloading section: plans per device group and edge utilisation."""

from __future__ import annotations

import math

import pandas as pd

from fedsim.analysis.load import RunSet
from fedsim.analysis.plots import (
    device_rounds_with_plans,
    edge_names,
    edge_utilisation,
    has_offloading,
    plot_edge_utilisation,
)
from fedsim.analysis.report_html import figure_html, note_html, table_html

__all__ = ["plan_table", "edge_utilisation_table", "offloading_section"]


def _numeric(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(0.0, index=frame.index)
    return pd.to_numeric(frame[col], errors="coerce").fillna(0.0)


def _edge_rank(edge_id: str) -> int:
    return int(edge_id) if edge_id.isdigit() else 1 << 30


def plan_table(rs: RunSet) -> pd.DataFrame:
    """Return the offloading plans per device group, pooled over each configuration's seeds.

    One row per configuration (a column only when there are several), edge, hardware
    profile, link and plan: the device-rounds, their share of the group's (edge, profile,
    link) device-rounds and of all the configuration's device-rounds, the share that
    completed, the ``oom`` count, the mean ``compute_s`` (the device's compute phase: the
    edge training for ``full``, the alternating batches for ``split``), the mean
    ``edge_compute_s`` and ``edge_queue_s``, and the MB of training data and of activations
    (up + down) moved per run (mean over the seeds). Runs without a ``plan`` column are left
    out; with none, the frame is empty.
    """
    frames = []
    for run in rs.runs:
        if not has_offloading(run) or run.device_rounds.empty:
            continue
        dr = device_rounds_with_plans(run)
        names = edge_names(run)
        edge_ids = dr["edge_id"].astype(str)
        status = dr["status"].astype(str)
        frames.append(
            pd.DataFrame(
                {
                    "configuration": run.label,
                    "run": run.run_id,
                    "rank": [_edge_rank(e) for e in edge_ids],
                    "edge": [names.get(e, e) for e in edge_ids],
                    "profile": dr["profile"].astype(str),
                    "link": dr["link"].astype(str),
                    "plan": dr["plan"].astype(str),
                    "completed": status.eq("completed"),
                    "oom": status.eq("oom"),
                    "compute_s": _numeric(dr, "compute_s"),
                    "edge_compute_s": _numeric(dr, "edge_compute_s"),
                    "edge_queue_s": _numeric(dr, "edge_queue_s"),
                    "data_mb": _numeric(dr, "data_bytes_up") / 1e6,
                    "act_mb": (_numeric(dr, "act_bytes_up") + _numeric(dr, "act_bytes_down")) / 1e6,
                }
            )
        )
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    keys = ["configuration", "rank", "edge", "profile", "link", "plan"]
    table = (
        frame.groupby(keys, sort=False)
        .agg(
            device_rounds=("plan", "size"),
            completed=("completed", "mean"),
            oom=("oom", "sum"),
            compute_s=("compute_s", "mean"),
            edge_compute_s=("edge_compute_s", "mean"),
            edge_queue_s=("edge_queue_s", "mean"),
            data_mb=("data_mb", "sum"),
            act_mb=("act_mb", "sum"),
        )
        .reset_index()
    )
    configs = list(dict.fromkeys(frame["configuration"]))
    table["_config"] = table["configuration"].map({c: i for i, c in enumerate(configs)})
    table = table.sort_values(["_config", "rank", "edge", "profile", "link", "plan"])
    group = table.groupby(["configuration", "rank", "edge", "profile", "link"], sort=False)
    table["group_pct"] = 100 * table["device_rounds"] / group["device_rounds"].transform("sum")
    total = table.groupby("configuration", sort=False)["device_rounds"].transform("sum")
    table["all_pct"] = 100 * table["device_rounds"] / total
    table["completed"] = 100 * table["completed"]
    table["oom"] = table["oom"].astype(int)
    n_runs = frame.groupby("configuration", sort=False)["run"].nunique()
    for col in ("data_mb", "act_mb"):  # per run: a mean over the configuration's seeds
        table[col] = table[col] / table["configuration"].map(n_runs)
    cols = [
        "configuration", "edge", "profile", "link", "plan", "device_rounds", "group_pct",
        "all_pct", "completed", "oom", "compute_s", "edge_compute_s", "edge_queue_s",
        "data_mb", "act_mb",
    ]  # fmt: skip
    if len(configs) == 1:
        cols.remove("configuration")
    return (
        table[cols]
        .rename(
            columns={
                "device_rounds": "device-rounds",
                "group_pct": "% of group",
                "all_pct": "% of all",
                "completed": "completed (%)",
                "compute_s": "compute phase (s, mean)",
                "edge_compute_s": "edge compute (s, mean)",
                "edge_queue_s": "edge queue (s, mean)",
                "data_mb": "training data up (MB per run)",
                "act_mb": "activations up + down (MB per run)",
            }
        )
        .reset_index(drop=True)
    )


def edge_utilisation_table(rs: RunSet) -> pd.DataFrame:
    """Return each edge's utilisation per configuration (see :func:`edge_utilisation`).

    Columns: the runs, the mean utilisation (busy seconds over virtual time, then the mean
    over the configuration's runs), its offloaded-training and edge-tier parts, and the
    highest utilisation of any round (NaN for asynchronous runs: a dispatch's offloaded
    training is charged to the version in which it ended, often far shorter than the
    training). Empty when no run has the offloading columns.
    """
    rows = []
    for run in rs.runs:
        util = edge_utilisation(run)
        if util.empty:
            continue
        for edge_id, g in util.groupby("edge_id", sort=False):
            span = float(g["duration_s"].where(g["duration_s"] > 0).sum())
            if span <= 0:
                continue
            rows.append(
                {
                    "configuration": run.label,
                    "rank": _edge_rank(str(edge_id)),
                    "edge": str(g["edge"].iloc[0]),
                    "total": 100 * float((g["offload_busy_s"] + g["edge_tier_s"]).sum()) / span,
                    "offload": 100 * float(g["offload_busy_s"].sum()) / span,
                    "tier": 100 * float(g["edge_tier_s"].sum()) / span,
                    "peak": math.nan if run.is_async else 100 * float(g["utilisation"].max()),
                }
            )
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    table = (
        frame.groupby(["configuration", "rank", "edge"], sort=False)
        .agg(
            runs=("total", "size"),
            total=("total", "mean"),
            offload=("offload", "mean"),
            tier=("tier", "mean"),
            peak=("peak", "max"),
        )
        .reset_index()
        .drop(columns="rank")
        .rename(
            columns={
                "total": "mean utilisation (%)",
                "offload": "offloaded training (%)",
                "tier": "edge tier (%)",
                "peak": "busiest round (%)",
            }
        )
    )
    if table["configuration"].nunique() == 1:
        table = table.drop(columns="configuration")
    return table


def offloading_section(rs: RunSet) -> str:
    """Return the Offloading section: the plan table, edge utilisation figures and table."""
    parts = ["<h2>Offloading</h2>\n"]
    parts.append(
        '<p class="note">Plans per device group (edge, hardware profile, link), seeds '
        "pooled: <code>local</code> trains on the device, <code>full</code> uploads the "
        "training data and the edge trains, <code>split(k)</code> alternates device and "
        "edge batch by batch. “% of group”: share of the group's device-rounds; “% of "
        "all”: share of all device-rounds; compute phase: the device's "
        "<code>compute_s</code> (under <code>full</code> the edge's training for it).</p>\n"
    )
    if any(run.is_async for run in rs.runs):
        parts.append(
            note_html(
                "In asynchronous runs a device-round is one dispatch (a row of "
                "<code>device_rounds.csv</code>). Their utilisation is given over whole runs "
                "only, not per version: a dispatch's offloaded training is charged to the "
                "version in which it ended, which is often far shorter than the training."
            )
        )
    parts.append(table_html(plan_table(rs)))
    shown: set[str] = set()
    for run in rs.runs:
        if run.is_async:  # per-version utilisation would be misleading (see the note)
            continue
        if run.label in shown or edge_utilisation(run).empty or len(shown) >= 4:
            continue
        shown.add(run.label)
        parts.append(
            figure_html(
                plot_edge_utilisation(run),
                f"edge utilisation {run.run_id}",
                f"{run.run_id}: each edge's utilisation per round against virtual time. "
                "Utilisation = (the sum over the edge's devices of edge_compute_s − "
                "edge_queue_s, i.e. the edge's compute seconds for offloaded training at its "
                "full rate, + the round's edge_s if the edge had a completed device) / the "
                "round's duration. edge_compute_s alone would count seconds shared with "
                "other devices once per device (over 100 % when devices share the edge); "
                "edge_s (aggregation and upload to the cloud) is per round, not per edge, so "
                "that part is an upper bound. Dotted: the offloaded training alone.",
            )
        )
    util = edge_utilisation_table(rs)
    if not util.empty:
        parts.append(
            '<p class="note">Edge utilisation over whole runs (busy seconds over virtual '
            "time, mean over seeds); busiest round: the highest per-round value.</p>\n"
        )
        parts.append(table_html(util))
    return "".join(parts)
