"""A self-contained HTML report of a run or sweep folder (figures inline as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fedsim.analysis.load import RunData, RunSet, load
from fedsim.analysis.metrics import NOT_REACHED
from fedsim.analysis.plots import (
    device_rounds_with_plans,
    edge_names,
    edge_utilisation,
    has_offloading,
    pick_offload_round,
    pick_timeline_round,
    plot_cumulative,
    plot_curves,
    plot_device_timeline,
    plot_edge_utilisation,
    plot_metric,
    plot_time_breakdown,
    plot_ua_boxplot,
)
from fedsim.analysis.tables import format_si, summary_table, target_table, time_breakdown_table

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
    frame = frame.rename(columns={"label": "configuration"})
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

    None if no run has a value (e.g. ``learning: false``), else the scenario's
    ``stop.target_accuracy`` if set, else 90 % of the best value any run reached,
    rounded down to 0.01.
    """
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
    for run in rs.runs:
        target = (run.scenario.get("stop") or {}).get("target_accuracy")
        if target is not None:
            return float(target), "the scenario's stop.target_accuracy"
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
        f"{k}=({_fmt_dict(v)})" if isinstance(v, dict) else f"{k}={v}"
        for k, v in d.items()
        if v is not None and v != {}
    )


#: The fields of a scenario section that apply, by its ``kind`` (see fedsim/config.py);
#: the others hold defaults that the run did not use. A kind not listed keeps all.
_APPLIES: dict[str, dict[str, tuple[str, ...]]] = {
    "partition": {
        "iid": (),
        "natural": (),
        "shards": ("shards_per_device",),
        "dirichlet": ("alpha", "test_per_device"),
    },
    "runtime": {"inline": ("torch_threads", "vectorize")},
    "availability": {"always_on": ()},
    "failure_detection": {"instant": ()},
}


def _applying(section: str, d: Any) -> Any:
    """Return the scenario section ``d`` with only its kind and the fields that apply."""
    if not isinstance(d, dict) or d.get("kind") not in _APPLIES[section]:
        return d
    return {"kind": d["kind"], **{k: d[k] for k in _APPLIES[section][d["kind"]] if k in d}}


def _data_text(data: dict[str, Any]) -> str:
    partition = _applying("partition", data.get("partition", {}))
    text = f"{data.get('dataset', '?')}, partition {_fmt_dict(partition)}"
    if data.get("samples_per_device") is not None:
        text += f", {data['samples_per_device']} samples per device"
        if data.get("samples_sigma"):
            text += f" (lognormal, sigma {data['samples_sigma']})"
    if data.get("options"):
        text += f", options {_fmt_dict(data['options'])}"
    return text


def _model_text(run: RunData) -> str:
    model = run.meta.get("model", {})
    if isinstance(model.get("num_params"), int) and isinstance(model.get("param_bytes"), int):
        return (
            f"{model.get('name', run.scenario.get('model', '?'))}, "
            f"{model['num_params']:,} parameters, {format_si(model['param_bytes'], 'B')}"
        )
    return str(run.scenario.get("model", "?"))


def _rounds_text(rounds: dict[str, Any]) -> str:
    shown = dict(rounds)
    if "failure_detection" in shown:
        shown["failure_detection"] = _applying("failure_detection", shown["failure_detection"])
    return _fmt_dict(shown)


def _scenario_rows(rs: RunSet) -> list[tuple[str, str]]:
    run = rs.runs[0]
    sc = run.scenario
    learning = sc.get("learning", True) is not False
    rows = [
        ("Scenario", f"{sc.get('name', '?')} ({run.meta.get('scenario_file', '?')})"),
        ("fedsim version", str(run.meta.get("fedsim_version", "?"))),
        (
            "Learning",
            "true" if learning else "false (systems only: no model is trained or evaluated)",
        ),
        ("Data", _data_text(sc.get("data", {}))),
        ("Model", _model_text(run)),
        ("Topology", _describe_topology(sc.get("topology", {}))),
        ("Algorithm", _algorithm_text(sc.get("algorithm", {}))),
        ("Rounds", _rounds_text(sc.get("rounds", {}))),
        ("Availability", _fmt_dict(_applying("availability", sc.get("availability", {})))),
        ("Stop", _fmt_dict(sc.get("stop", {}))),
    ]
    if learning:
        rows.append(("Evaluation", _fmt_dict(sc.get("evaluation", {}))))
    network = sc.get("network", {})
    if isinstance(network, dict) and network.get("contention") is False:
        rows.append(("Network", "contention: false (each transfer at its own rate)"))
    traces = _fmt_dict(sc.get("traces", {}))
    if traces:
        rows.append(("Traces", traces))
    rows.append(("Runtime", _fmt_dict(_applying("runtime", sc.get("runtime", {})))))
    rows += _runs_rows(rs)
    return rows


def _algorithm_text(algo: dict[str, Any]) -> str:
    return f"{algo.get('use', '?')} {_fmt_dict(algo.get('params', {}))}".strip()


def _runs_rows(rs: RunSet) -> list[tuple[str, str]]:
    """Return the rows on the sweep, the configurations, the seeds and incomplete runs."""
    rows = []
    if rs.sweep:
        grid = rs.sweep.get("grid", {})
        rows.append(
            (
                "Sweep grid",
                "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items()),
            )
        )
        rows.append(("Sweep scenario", str(rs.sweep.get("scenario", "?"))))
    configs = Counter(r.label for r in rs.runs)
    if not rs.grid_keys and len(configs) > 1:
        rows.append(
            (
                "Configurations",
                f"{len(configs)} (the rows above describe the first run's): "
                + "; ".join(f"{c} ({n} runs)" for c, n in configs.items()),
            )
        )
    seeds = sorted({r.seed for r in rs.runs})
    n_seeds = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    rows.append(("Runs", f"{len(rs.runs)} ({n_seeds}: {', '.join(map(str, seeds))})"))
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
    return _drop_empty(agg, ["final_accuracy", "final_ua_mean"]).rename(
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


def _drop_empty(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Drop those of ``columns`` that hold no value (e.g. accuracies of ``learning: false``)."""
    return frame.drop(columns=[c for c in columns if c in frame and frame[c].isna().all()])


def runs_table(rs: RunSet) -> pd.DataFrame:
    """Return the report's "All runs" table: one row per run, readable names and units.

    Columns: ``run``, the grid keys (a sweep) or ``configuration`` (loose runs of several
    configurations), ``seed``, ``rounds``, ``virtual time (s)``, ``final accuracy`` and
    ``final mean UA`` (left out when no run has a value), ``traffic up`` and ``traffic
    down`` (e.g. ``2.32 MB``), ``device energy`` (e.g. ``1.2 kJ``), ``stragglers`` and
    ``dropped``. :func:`fedsim.analysis.summary_table` has the same numbers unformatted.
    """
    summ = summary_table(rs)
    if summ.empty:
        return summ
    out = pd.DataFrame({"run": summ["run_id"]})
    for key in rs.grid_keys:
        out[key] = summ[key]
    if not rs.grid_keys and summ["label"].nunique() > 1:
        out["configuration"] = summ["label"]
    out["seed"] = summ["seed"]
    out["rounds"] = summ["rounds"]
    out["virtual time (s)"] = summ["virtual_time_s"]
    out["final accuracy"] = summ["final_accuracy"]
    out["final mean UA"] = summ["final_ua_mean"]
    out = _drop_empty(out, ["final accuracy", "final mean UA"])
    out["traffic up"] = [format_si(b, "B") for b in summ["bytes_up"]]
    out["traffic down"] = [format_si(b, "B") for b in summ["bytes_down"]]
    out["device energy"] = [format_si(e, "J") for e in summ["energy_j"]]
    out["stragglers"] = summ["stragglers"]
    out["dropped"] = summ["dropped"]
    return out


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
    highest utilisation of any round. Empty when no run has the offloading columns.
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
                    "peak": 100 * float(g["utilisation"].max()),
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


def _offloading_section(rs: RunSet) -> str:
    parts = ["<h2>Offloading</h2>\n"]
    parts.append(
        '<p class="note">Plans per device group (edge, hardware profile, link), seeds '
        "pooled: <code>local</code> trains on the device, <code>full</code> uploads the "
        "training data and the edge trains, <code>split(k)</code> alternates device and "
        "edge batch by batch. “% of group”: share of the group's device-rounds; “% of "
        "all”: share of all device-rounds; compute phase: the device's "
        "<code>compute_s</code> (under <code>full</code> the edge's training for it).</p>\n"
    )
    parts.append(_table(plan_table(rs)))
    shown: set[str] = set()
    for run in rs.runs:
        if run.label in shown or edge_utilisation(run).empty or len(shown) >= 4:
            continue
        shown.add(run.label)
        parts.append(
            _img(
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
        parts.append(_table(util))
    return "".join(parts)


def _curves_section(rs: RunSet) -> str:
    """Return the learning curves (none for ``learning: false``) and the round times."""
    parts = ["<h2>Learning curves</h2>\n"]
    curve_metrics = [
        m
        for m in ("accuracy", "ua_mean")
        if any(m in r.rounds and r.rounds[m].notna().any() for r in rs.runs)
    ]
    if curve_metrics:
        parts.append(
            _img(
                plot_curves(rs, metrics=curve_metrics),
                "learning curves",
                "Accuracy and mean user-model accuracy against virtual time (left) and "
                "round (right); lines are means over seeds, bands their intervals.",
            )
        )
    else:
        learning = any(r.scenario.get("learning", True) is not False for r in rs.runs)
        why = "no round was evaluated" if learning else "learning: false, no model was trained"
        parts.append(f'<p class="note">No accuracy to plot: {why}.</p>\n')
    parts.append(
        _img(plot_metric(rs, "round_time_s", x="round"), "round time", "Virtual time per round.")
    )
    return "".join(parts)


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
        return _img(
            plot_device_timeline(run, gantt_round),
            f"device timeline {run.run_id}",
            f"{run.run_id}, round {gantt_round} (chosen): {phases}" + _offload_note(run),
        )
    rnd = pick_timeline_round(run)
    parts = [
        _img(
            plot_device_timeline(run, rnd),
            f"device timeline {run.run_id}",
            f"{run.run_id}, round {rnd} (the round with the most stragglers and "
            f"drop-outs): {phases}" + _offload_note(run),
        )
    ]
    off_rnd = pick_offload_round(run)
    if off_rnd is not None and off_rnd != rnd:
        parts.append(
            _img(
                plot_device_timeline(run, off_rnd),
                f"device timeline {run.run_id} offloading",
                f"{run.run_id}, round {off_rnd} (the round with the most offloaded "
                "devices)." + _offload_note(run),
            )
        )
    return "".join(parts)


def _timelines_section(rs: RunSet, gantt_round: int | None) -> str:
    """Return the device timelines of the first run of up to four configurations."""
    parts = ["<h2>Stragglers: device timelines</h2>\n"]
    if gantt_round is None:
        parts.append(
            '<p class="note">Another round: <code>write_report(..., gantt_round=R)</code> '
            "or <code>fedsim report DIR --round R</code>.</p>\n"
        )
    shown: set[str] = set()
    for run in rs.runs:
        if run.label in shown or run.device_rounds.empty or len(shown) >= 4:
            continue
        shown.add(run.label)
        parts.append(_timeline_figures(run, gantt_round))
    return "".join(parts)


def write_report(
    run_or_sweep_dir: Path,
    out: Path | None = None,
    metric: str | None = None,
    target: float | None = None,
    confidence: float = 0.95,
    gantt_round: int | None = None,
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
        f"seconds. Intervals are {confidence:.0%} Student-t intervals over seeds, clipped "
        "to each quantity's range (accuracy 0–1; times, traffic and energy ≥ 0); with "
        "fewer than 3 seeds an interval means little, so tables and bands show the "
        "min–max over the seeds instead.</p>\n",
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

    parts.append(_curves_section(rs))
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

    if any(has_offloading(r) and not r.device_rounds.empty for r in rs.runs):
        parts.append(_offloading_section(rs))

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

    parts.append(_timelines_section(rs, gantt_round))

    if target is not None:
        parts.append(f"<h2>Rounds and time to {html.escape(metric)} ≥ {target:g}</h2>\n")
        parts.append(_table(target_table(rs, metric, target, by=by, confidence=confidence)))
    parts.append("<h2>All runs</h2>\n")
    parts.append(_table(runs_table(rs)))
    parts.append("</body></html>\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out
