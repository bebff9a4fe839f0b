"""Result tables: per-run summary, rounds and time to target, per-round time breakdown."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.load import RunData, RunSet, rounds_frame
from analysis.metrics import NOT_REACHED, target_summary

__all__ = [
    "PHASES",
    "PHASE_LABELS",
    "summary_table",
    "target_table",
    "time_breakdown",
    "time_breakdown_table",
    "to_markdown",
]

#: Per-round time phases of ``rounds.csv``, in stacking order.
PHASES = ["download_s", "compute_s", "upload_s", "edge_s", "cloud_s", "wait_s"]
#: Display names of the phases (MTFL Table 4's Down / Client / Up / Server, split by tier).
PHASE_LABELS = {
    "download_s": "Download",
    "compute_s": "Device compute",
    "upload_s": "Upload",
    "edge_s": "Edge",
    "cloud_s": "Cloud",
    "wait_s": "Waiting",
}


def _as_runset(runs: RunSet | Sequence[RunData]) -> RunSet:
    return runs if isinstance(runs, RunSet) else RunSet(runs=list(runs))


def _by(runs: RunSet, by: Sequence[str] | None) -> list[str]:
    return list(by) if by is not None else (list(runs.grid_keys) or ["label"])


def summary_table(runs: RunSet | Sequence[RunData]) -> pd.DataFrame:
    """Return one row per run: rounds, virtual time, final accuracy, bytes, energy, stragglers.

    ``final_accuracy`` is the last evaluated accuracy (NaN if the run never evaluated;
    :func:`to_markdown` shows it as ``n/a``).
    """
    rs = _as_runset(runs)
    rows = []
    for run in rs.runs:
        r = run.rounds
        acc = pd.to_numeric(r.get("accuracy", pd.Series(dtype=float)), errors="coerce").dropna()
        ua = pd.to_numeric(r.get("ua_mean", pd.Series(dtype=float)), errors="coerce").dropna()
        row: dict[str, object] = {"run_id": run.run_id, "label": run.label}
        row.update({k: run.params.get(k, "") for k in rs.grid_keys})
        row.update(
            seed=run.seed,
            rounds=len(r),
            virtual_time_s=float(r["virtual_time_s"].max()) if len(r) else 0.0,
            final_accuracy=float(acc.iloc[-1]) if len(acc) else math.nan,
            final_ua_mean=float(ua.iloc[-1]) if len(ua) else math.nan,
            bytes_up=int(r["bytes_up"].sum()),
            bytes_down=int(r["bytes_down"].sum()),
            energy_j=float(r["energy_j"].sum()),
            participants=int(r["participants"].sum()),
            stragglers=int(r["stragglers"].sum()),
            dropped=int(r["dropped"].sum()),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}"


def _fmt_ci(mean: float, low: float, high: float, digits: int, unit: str = "") -> str:
    half = (high - low) / 2
    text = _fmt_num(mean, digits)
    if half > 0:
        text += f" ± {_fmt_num(half, digits)}"
    return text + unit


def target_table(
    runs: RunSet | Sequence[RunData],
    metric: str = "accuracy",
    target: float = 0.9,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
    index: str | None = None,
    columns: str | None = None,
    value: str = "rounds",
) -> pd.DataFrame:
    """Return rounds and virtual time to target per configuration, as display strings.

    Cells read ``mean ± half-width`` of the Student-t interval over seeds; a
    configuration none of whose seeds reached the target reads ``"not reached"``; one
    that some seeds reached gets ``" (k/n reached)"`` appended (its mean is over the
    seeds that reached it).

    Parameters
    ----------
    runs : RunSet or sequence of RunData
        The runs.
    metric, target : str, float
        What to reach (a ``rounds.csv`` column, e.g. ``ua_mean``) and the threshold.
    by : sequence of str, optional
        Configuration columns; default: the grid keys, else ``label``.
    confidence : float
        Coverage of the interval.
    index, columns : str, optional
        If both given, pivot into a matrix (rows ``index``, columns ``columns``, cells
        ``value``) like MTFL's Tables 2-3.
    value : str
        ``"rounds"`` or ``"time_s"``: the cell of a pivoted table.

    Returns
    -------
    pandas.DataFrame
        Long form: the ``by`` columns, ``seeds`` (``k/n`` reached), ``rounds``, ``time_s``.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    summ = target_summary(rs, metric, target, by=by, confidence=confidence)
    rows = []
    for rec in summ.to_dict("records"):
        row = {k: rec[k] for k in by}
        row["seeds"] = f"{rec['n_reached']}/{rec['n_runs']}"
        for col, digits, unit in (("rounds", 1, ""), ("time_s", 1, " s")):
            if rec["status"] == "not reached":
                row[col] = NOT_REACHED
                continue
            d = 0 if col == "rounds" and rec[f"{col}_ci_low"] == rec[f"{col}_ci_high"] else digits
            text = _fmt_ci(rec[f"{col}_mean"], rec[f"{col}_ci_low"], rec[f"{col}_ci_high"], d, unit)
            if rec["status"] == "partly reached":
                text += f" ({row['seeds']} reached)"
            row[col] = text
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*by, "seeds", "rounds", "time_s"])
    if index is not None and columns is not None:
        table = table.pivot(index=index, columns=columns, values=value)
        table.columns.name = columns
        table = table.fillna("not run")
    return table


def time_breakdown(
    runs: RunSet | Sequence[RunData], by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Return the mean per-round time split into phases, in virtual seconds and percent.

    Every round of every seed counts once. For each phase of :data:`PHASES` the frame
    has the mean seconds per round and ``<phase>_pct``, its share of the mean round
    time ``round_time_s`` (``virtual_time_s - round_start_s``). Phases a round has no
    value for (no device completed) count as 0 s.

    Parameters
    ----------
    runs : RunSet or sequence of RunData
        The runs.
    by : sequence of str, optional
        Configuration columns; default: the grid keys, else ``label``.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    frame = rounds_frame(rs.runs, rs.grid_keys)
    cols = [*by, "n_runs", "n_rounds", "round_time_s", *PHASES, *[f"{p}_pct" for p in PHASES]]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    frame[PHASES] = frame[PHASES].fillna(0.0)
    rows = []
    for values, group in frame.groupby(by, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, object] = dict(zip(by, values, strict=True))
        total = float(group["round_time_s"].mean())
        row.update(n_runs=group["run_id"].nunique(), n_rounds=len(group), round_time_s=total)
        for p in PHASES:
            row[p] = float(group[p].mean())
        for p in PHASES:
            row[f"{p}_pct"] = 100.0 * row[p] / total if total > 0 else 0.0  # type: ignore[operator]
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def time_breakdown_table(
    runs: RunSet | Sequence[RunData], by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Return :func:`time_breakdown` as display strings (MTFL Table 4 style).

    Columns: the configuration, ``Round time (s)`` and one per phase reading
    ``seconds (percent)``.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    tb = time_breakdown(rs, by)
    out = tb[by].copy()
    out["Round time (s)"] = [_fmt_num(x, 2) for x in tb["round_time_s"]]
    for p in PHASES:
        out[PHASE_LABELS[p]] = [
            f"{s:,.2f} ({pct:.1f} %)" for s, pct in zip(tb[p], tb[f"{p}_pct"], strict=True)
        ]
    return out


def _cell(x: object) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "n/a"
        value = float(x)
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{x:,}"
    return str(x).replace("|", "\\|")


def to_markdown(table: pd.DataFrame, index: bool = False) -> str:
    """Render a table as GitHub markdown; NaN shows as ``n/a``, never as an empty cell."""
    frame = table.reset_index() if index else table
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for rec in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in rec) + " |")
    return "\n".join(lines) + "\n"
