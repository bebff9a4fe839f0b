"""The report's summaries: the target, key-figure cards, the key figures and all-runs tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from fedsim.analysis.load import RunSet
from fedsim.analysis.metrics import NOT_REACHED
from fedsim.analysis.report_async import row_noun
from fedsim.analysis.report_html import cards_html
from fedsim.analysis.tables import format_si, summary_table, target_table

__all__ = ["default_target", "metric_of", "key_figures", "runs_table", "cards", "drop_empty"]


def metric_of(rs: RunSet) -> str:
    """Return the metric a report targets: ``accuracy`` if any run has it, else ``ua_mean``."""
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


def key_figures(rs: RunSet, metric: str, target: float | None, by: Sequence[str]) -> pd.DataFrame:
    """Return the Key figures table: one row per configuration, means over its seeds.

    Rounds are called versions when every run is asynchronous (``rounds.csv`` rows are
    global model versions there), ``rounds / versions`` when some are.
    """
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
    rounds = row_noun(rs.runs)
    if target is not None:
        tt = target_table(rs, metric, target, by=by)
        agg.insert(len(by) + 1, f"time to {metric} ≥ {target:g}", tt["time_s"].to_numpy())
        agg.insert(len(by) + 2, f"{rounds} to {metric} ≥ {target:g}", tt["rounds"].to_numpy())
    return drop_empty(agg, ["final_accuracy", "final_ua_mean"]).rename(
        columns={
            "rounds": f"{rounds} run",
            "virtual_time_s": "virtual time (s)",
            "final_accuracy": "final accuracy",
            "final_ua_mean": "final mean UA",
            "traffic_mb": "traffic (MB)",
            "energy_kj": "device energy (kJ)",
            "straggler_pct": "stragglers (% of selected)",
            "dropped_pct": "dropped (% of selected)",
        }
    )


def drop_empty(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Drop those of ``columns`` that hold no value (e.g. accuracies of ``learning: false``)."""
    return frame.drop(columns=[c for c in columns if c in frame and frame[c].isna().all()])


def runs_table(rs: RunSet) -> pd.DataFrame:
    """Return the report's "All runs" table: one row per run, readable names and units.

    Columns: ``run``, the grid keys (a sweep) or ``configuration`` (loose runs of several
    configurations), ``seed``, ``rounds``, ``virtual time (s)``, ``final accuracy`` and
    ``final mean UA`` (left out when no run has a value), ``traffic up`` and ``traffic
    down`` (e.g. ``2.32 MB``), ``device energy`` (e.g. ``1.2 kJ``), ``stragglers`` and
    ``dropped``. :func:`fedsim.analysis.summary_table` has the same numbers unformatted.
    ``rounds`` reads ``versions`` when every run is asynchronous (``rounds.csv`` rows are
    global model versions there) and ``rounds / versions`` when some are.
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
    out[row_noun(rs.runs)] = summ["rounds"]
    out["virtual time (s)"] = summ["virtual_time_s"]
    out["final accuracy"] = summ["final_accuracy"]
    out["final mean UA"] = summ["final_ua_mean"]
    out = drop_empty(out, ["final accuracy", "final mean UA"])
    out["traffic up"] = [format_si(b, "B") for b in summ["bytes_up"]]
    out["traffic down"] = [format_si(b, "B") for b in summ["bytes_down"]]
    out["device energy"] = [format_si(e, "J") for e in summ["energy_j"]]
    out["stragglers"] = summ["stragglers"]
    out["dropped"] = summ["dropped"]
    return out


def cards(rs: RunSet, metric: str, target: float | None) -> str:
    """Return the key-figure cards: runs, means of time, traffic and energy, the target."""
    summ = summary_table(rs)
    items = [
        ("Runs", f"{len(rs.runs)}"),
        ("Virtual time (mean)", f"{summ['virtual_time_s'].mean():,.1f} s"),
        ("Traffic (mean)", f"{(summ['bytes_up'] + summ['bytes_down']).mean() / 1e6:,.2f} MB"),
        ("Device energy (mean)", f"{summ['energy_j'].mean() / 1e3:,.2f} kJ"),
    ]
    sel = summ["participants"].sum()
    if sel:
        items.append(
            (
                "Stragglers / drop-outs",
                f"{100 * summ['stragglers'].sum() / sel:.1f} % / "
                f"{100 * summ['dropped'].sum() / sel:.1f} %",
            )
        )
    if target is not None:
        tt = target_table(rs, metric, target, by=["label"] if not rs.grid_keys else None)
        best = [t for t in tt["time_s"] if t != NOT_REACHED]
        items.append((f"Time to {metric} ≥ {target:g}", f"{len(best)}/{len(tt)} configs reached"))
    return cards_html(items)
