"""Result tables: per-run summary, time to target, per-round time breakdown and critical path."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsim.analysis.load import RunData, RunSet, device_rounds_frame, rounds_frame
from fedsim.analysis.metrics import MIN_SEEDS_FOR_CI, NOT_REACHED, target_summary

__all__ = [
    "CRITICAL_LABELS",
    "CRITICAL_PHASES",
    "PHASES",
    "PHASE_LABELS",
    "critical_devices",
    "critical_path",
    "critical_path_table",
    "format_si",
    "summary_table",
    "table4_comparison",
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
#: Phases of a round's critical path (its slowest kept device), MTFL Table 4's order.
CRITICAL_PHASES = ["down_s", "client_s", "up_s", "server_s", "other_s"]
#: Display names of the critical-path phases (MTFL Table 4's column names, plus Other).
CRITICAL_LABELS = {
    "down_s": "Down",
    "client_s": "Client",
    "up_s": "Up",
    "server_s": "Server",
    "other_s": "Other",
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


_SI_PREFIXES = ("", "k", "M", "G", "T", "P")


def format_si(value: float, unit: str) -> str:
    """Format a quantity with three significant digits and an SI prefix.

    E.g. ``format_si(231_360, "B") == "231 kB"``, ``format_si(2.32e9, "B") == "2.32 GB"``,
    ``format_si(48.1, "J") == "48.1 J"``; NaN reads ``n/a``.
    """
    if not math.isfinite(value):
        return "n/a"
    scaled, i = float(value), 0
    while True:
        text = f"{scaled:.0f}" if abs(scaled) >= 100 else f"{scaled:.3g}"
        if abs(float(text)) < 1000 or i == len(_SI_PREFIXES) - 1:
            return f"{text} {_SI_PREFIXES[i]}{unit}"
        scaled, i = scaled / 1000, i + 1


def _fmt_num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}"


def _fmt_ci(mean: float, low: float, high: float, digits: int, unit: str = "") -> str:
    """Format ``mean ± half-width``, or ``mean [low, high]`` when the interval was clipped."""
    half = (high - low) / 2
    text = _fmt_num(mean, digits)
    if _fmt_num(half, digits) == _fmt_num(0.0, digits):  # no spread at this precision
        return text + unit
    if math.isclose(mean - low, high - mean, rel_tol=1e-9, abs_tol=1e-12):
        return f"{text} ± {_fmt_num(half, digits)}{unit}"
    return f"{text} [{_fmt_num(low, digits)}, {_fmt_num(high, digits)}]{unit}"


def _fmt_seeds(rec: Mapping[str, Any], col: str, digits: int, unit: str) -> str:
    """Format one target-table cell: an interval over enough seeds, else min–max."""
    n = int(rec["n_reached"])
    mean, low, high = (float(rec[f"{col}_{k}"]) for k in ("mean", "ci_low", "ci_high"))
    if n >= MIN_SEEDS_FOR_CI or n == 1:
        d = 0 if col == "rounds" and low == high else digits
        return _fmt_ci(mean, low, high, d, unit)
    lo, hi = float(rec[f"{col}_min"]), float(rec[f"{col}_max"])
    d = 0 if col == "rounds" else digits
    if _fmt_num(lo, d) == _fmt_num(hi, d):  # the seeds agree
        return _fmt_num(mean, d) + unit
    return f"{_fmt_num(mean, digits)}{unit} (min–max {_fmt_num(lo, d)}–{_fmt_num(hi, d)}, n = {n})"


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

    Cells read ``mean ± half-width`` of the Student-t interval over seeds, or ``mean
    [low, high]`` where the interval was clipped at 0 s or 1 round. Over fewer than
    :data:`~fedsim.analysis.metrics.MIN_SEEDS_FOR_CI` seeds an interval means little
    (t(0.975, 1) = 12.7), so two seeds read ``mean (min–max a–b, n = 2)``; one seed reads
    its value. A configuration none of whose seeds reached the target reads ``"not
    reached"``; one that some seeds reached gets ``" (k/n reached)"`` appended (its mean
    is over the seeds that reached it).

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
            text = _fmt_seeds(rec, col, digits, unit)
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


def critical_devices(runs: RunSet | Sequence[RunData]) -> pd.DataFrame:
    """Return each round's critical path: the phases of its slowest kept device.

    For every row of every run's ``rounds.csv`` the slowest kept device is the one of
    that round in ``device_rounds.csv`` with status ``completed`` and the largest
    ``end_s`` (ties: the smallest ``device_id``). Its ``download_s``, ``compute_s`` and
    ``upload_s`` are the round's ``down_s``, ``client_s`` and ``up_s`` (``down_s``
    includes any wait for the edge to fetch the model from the cloud, as
    ``download_s`` does); ``server_s`` is the round's ``edge_s + cloud_s``, and
    ``other_s`` is what is left of the round time, ``round_time_s - down_s - client_s
    - up_s - server_s``.

    ``other_s`` is about 0 (float rounding) when the round waited for all its devices,
    since then the slowest device's report closes collection and the server phase
    follows at once. It is positive when collection closed after the last kept report
    (a deadline passed) and it is the whole collection phase in a round where no
    device completed: such a round is kept, with ``device_id`` missing and 0 s of
    Down, Client and Up, so that the round times are those of :func:`time_breakdown`.

    Parameters
    ----------
    runs : RunSet or sequence of RunData
        The runs; each needs its ``device_rounds.csv``.

    Returns
    -------
    pandas.DataFrame
        One row per round: ``run_id``, ``seed``, ``label``, the grid keys, ``round``,
        ``round_index``, ``round_time_s``, ``device_id`` (nullable integer),
        ``profile``, ``link`` and the :data:`CRITICAL_PHASES` in seconds.
    """
    rs = _as_runset(runs)
    keys = ["run_id", "seed", "label", *rs.grid_keys]
    cols = [*keys, "round", "round_index", "round_time_s", "device_id", "profile", "link"]
    cols += CRITICAL_PHASES
    rounds = rounds_frame(rs.runs, rs.grid_keys)
    if rounds.empty:
        return pd.DataFrame(columns=cols)
    devices = device_rounds_frame(rs.runs, rs.grid_keys)
    phases = {"download_s": "down_s", "compute_s": "client_s", "upload_s": "up_s"}
    slowest = pd.DataFrame(columns=["run_id", "round", "device_id", "profile", "link", *phases])
    if not devices.empty:
        kept = devices[devices["status"] == "completed"]
        slowest = kept.sort_values(
            ["run_id", "round", "end_s", "device_id"],
            ascending=[True, True, False, True],
            kind="stable",
        ).drop_duplicates(["run_id", "round"], keep="first")
    slowest = slowest[["run_id", "round", "device_id", "profile", "link", *phases]]
    slowest = slowest.rename(columns=phases).astype({"round": float})
    frame = rounds.astype({"round": float}).merge(
        slowest, on=["run_id", "round"], how="left", validate="one_to_one"
    )
    frame["device_id"] = pd.to_numeric(frame["device_id"]).astype("Int64")
    frame["round"] = frame["round"].astype("Int64")
    for col in ("down_s", "client_s", "up_s"):
        frame[col] = pd.to_numeric(frame[col]).fillna(0.0)
    frame["server_s"] = frame["edge_s"].fillna(0.0) + frame["cloud_s"].fillna(0.0)
    frame["other_s"] = frame["round_time_s"] - frame[CRITICAL_PHASES[:4]].sum(axis=1)
    return frame[cols].reset_index(drop=True)


def critical_path(
    runs: RunSet | Sequence[RunData], by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Return the mean per-round critical path (MTFL Table 4's Down / Client / Up / Server).

    :func:`time_breakdown` averages the phase columns of ``rounds.csv``, which are
    means over a round's kept devices: fast devices' idle time shows as ``Waiting``.
    MTFL's Table 4 instead times a round along its critical path, the slowest client.
    This function does that (see :func:`critical_devices` for each round's row): every
    round of every seed counts once, and for each phase of :data:`CRITICAL_PHASES`
    the frame has the mean seconds per round and ``<phase>_pct``, its share of the
    mean round time ``round_time_s``. The five shares add up to 100 %; ``other_s`` is
    about 0 when every round waited for all its devices (no deadline), and a round in
    which no device completed counts as Server plus Other only.

    Parameters
    ----------
    runs : RunSet or sequence of RunData
        The runs; each needs its ``device_rounds.csv``.
    by : sequence of str, optional
        Configuration columns; default: the grid keys, else ``label``.

    Returns
    -------
    pandas.DataFrame
        One row per configuration: the ``by`` columns, ``n_runs``, ``n_rounds``,
        ``n_no_device`` (rounds without a completed device), ``critical_profile``
        (e.g. ``"rpi2b 10/10"``: the profile of the slowest device, most frequent
        first), ``round_time_s``, the phases in seconds and ``<phase>_pct``.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    frame = critical_devices(rs)
    pct = [f"{p}_pct" for p in CRITICAL_PHASES]
    cols = [*by, "n_runs", "n_rounds", "n_no_device", "critical_profile", "round_time_s"]
    cols += [*CRITICAL_PHASES, *pct]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for values, group in frame.groupby(by, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, object] = dict(zip(by, values, strict=True))
        counts = group["profile"].dropna().value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        total = float(group["round_time_s"].mean())
        row.update(
            n_runs=group["run_id"].nunique(),
            n_rounds=len(group),
            n_no_device=int(group["device_id"].isna().sum()),
            critical_profile=", ".join(f"{p} {n}/{len(group)}" for p, n in ranked),
            round_time_s=total,
        )
        means = {p: float(group[p].mean()) for p in CRITICAL_PHASES}
        row.update(means)
        row.update({f"{p}_pct": 100.0 * means[p] / total if total > 0 else 0.0 for p in means})
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _fmt_s(seconds: float) -> str:
    """Format a phase duration: ``1.68 s``, ``7 ms`` below 0.1 s, ``0 s`` below 0.5 ms."""
    if abs(seconds) < 5e-4:
        return "0 s"
    if abs(seconds) < 0.1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:,.2f} s"


def _shown(pct: float) -> bool:
    """Return True if a percentage reads as non-zero with one decimal."""
    return abs(pct) >= 0.05


def critical_path_table(
    runs: RunSet | Sequence[RunData], by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Return :func:`critical_path` as display strings, laid out like MTFL Table 4.

    Columns: the configuration, ``Time (s)`` (mean round time), ``Down``, ``Client``,
    ``Up`` and ``Server`` (percent of the round time, one decimal), and ``Other`` only
    if some configuration's Other share reads as non-zero.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    cp = critical_path(rs, by)
    out = cp[by].copy()
    out["Time (s)"] = [_fmt_num(x, 1) for x in cp["round_time_s"]]
    shown = [p for p in CRITICAL_PHASES if p != "other_s" or any(map(_shown, cp[f"{p}_pct"]))]
    for p in shown:
        out[CRITICAL_LABELS[p]] = [f"{x:.1f} %" for x in cp[f"{p}_pct"]]
    return out


def table4_comparison(
    runs: RunSet | Sequence[RunData],
    paper: Mapping[str, float],
    by: Sequence[str] | None = None,
    paper_label: str = "paper",
    per_device_mean: bool = True,
) -> pd.DataFrame:
    """Return a published Table-4 row beside our critical path (and per-device means).

    Parameters
    ----------
    runs : RunSet or sequence of RunData
        The runs; each needs its ``device_rounds.csv``.
    paper : mapping of str to float
        The published row: ``"Time (s)"`` and the ``"Down"``, ``"Client"``, ``"Up"``
        and ``"Server"`` percentages, e.g. MTFL Table 4's FL(FedAvg) MNIST row
        ``{"Time (s)": 30, "Down": 5, "Client": 88, "Up": 6, "Server": 1}``. Its
        seconds are implied (percent x time); ``Other`` is what its shares leave of 100.
    by : sequence of str, optional
        Configuration columns; default: the grid keys, else ``label``.
    paper_label : str
        The paper row's ``source``.
    per_device_mean : bool
        Also give, per configuration, the :func:`time_breakdown` view: Down, Client and
        Up are means over the kept devices, Server is ``edge_s + cloud_s`` and Other is
        the devices' mean ``wait_s`` (idle until the round closed).

    Returns
    -------
    pandas.DataFrame
        Display strings: ``source``, ``Time (s)``, then ``seconds (percent %)`` for
        ``Down``, ``Client``, ``Up``, ``Server`` and ``Other``; the paper row first,
        then per configuration its critical-path row and (optionally) its mean row.
    """
    rs = _as_runset(runs)
    by = _by(rs, by)
    labels = ["Down", "Client", "Up", "Server", "Other"]
    t_paper = float(paper["Time (s)"])
    shares = [float(paper[k]) for k in labels[:4]]
    shares.append(100.0 - sum(shares))
    rows = [
        {"source": paper_label, "Time (s)": f"{t_paper:g}"}
        | {k: f"{t_paper * p / 100:.1f} s ({p:g} %)" for k, p in zip(labels, shares, strict=True)}
    ]

    def ours(source: str, total: float, seconds: Sequence[float]) -> dict[str, str]:
        row = {"source": source, "Time (s)": _fmt_num(total, 1)}
        for k, s in zip(labels, seconds, strict=True):
            row[k] = f"{_fmt_s(s)} ({100 * s / total if total > 0 else 0.0:.1f} %)"
        return row

    cp = critical_path(rs, by)
    tb = time_breakdown(rs, by).set_index(by) if per_device_mean else None
    many = len(cp) > 1
    for rec in cp.to_dict("records"):
        name = ", ".join(str(rec[k]) for k in by)
        suffix = f" [{name}]" if many else ""
        total = float(rec["round_time_s"])
        seconds = [float(rec[p]) for p in CRITICAL_PHASES]
        rows.append(ours("fedsim, critical path (slowest device)" + suffix, total, seconds))
        if tb is not None:
            key = tuple(rec[k] for k in by) if len(by) > 1 else rec[by[0]]
            m = tb.loc[key]
            seconds = [m["download_s"], m["compute_s"], m["upload_s"]]
            seconds += [m["edge_s"] + m["cloud_s"], m["wait_s"]]
            rows.append(
                ours(
                    "fedsim, mean over devices (Other = waiting)" + suffix,
                    float(m["round_time_s"]),
                    [float(s) for s in seconds],
                )
            )
    return pd.DataFrame(rows, columns=["source", "Time (s)", *labels])


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
