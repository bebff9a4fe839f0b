"""PerFit's case study: the tables of per-device UA, convergence and communication.

Every function reads runs as :func:`analysis.docgen.run_variants` returns them (the
``method`` grid key names the method) and returns a table or a sentence; nothing is run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.perfit_methods import (
    KEY,
    MIXED,
    OTHERS,
    PAPER,
    PAPER_FD_VALUES,
    PAPER_PARAMS,
    kind_of,
    model_of,
)
from fedsim.analysis import RunData

# --------------------------------------------------------------------------- per-device UA


def final_device_ua(run: RunData) -> pd.DataFrame:
    """Return ``device_id, accuracy`` of a run's last evaluated version."""
    ua = run.device_ua
    if ua.empty:
        return pd.DataFrame({"device_id": [], "accuracy": []})
    last = ua["version"].max()
    rows = ua.loc[ua["version"] == last, ["device_id", "accuracy"]]
    return rows.reset_index(drop=True)


def device_frame(runs: Sequence[RunData], baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per method, seed and device: ``method, seed, device_id, accuracy``.

    Federated runs give their final evaluation (``params[KEY]`` names the method);
    ``baselines`` (the same columns) are appended as they are.
    """
    frames = []
    for run in runs:
        ua = final_device_ua(run)
        frames.append(ua.assign(method=run.params[KEY], seed=run.seed))
    if baselines is not None and len(baselines):
        frames.append(baselines)
    cols = ["method", "seed", "device_id", "accuracy"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def ua_stats(per_device: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Return each method's UA statistics over devices and seeds.

    Per method: ``seeds``; ``mean`` and ``std`` over seeds of the devices' mean UA; and
    ``min``, ``median`` and ``max`` over the devices, each a mean over seeds.
    """
    out: dict[str, dict[str, float]] = {}
    for method, group in per_device.groupby("method", sort=False):
        per_seed = group.groupby("seed")["accuracy"].agg(["mean", "min", "median", "max"])
        means = per_seed["mean"].to_numpy(float)
        out[str(method)] = {
            "seeds": float(len(per_seed)),
            "mean": float(means.mean()),
            "std": float(means.std(ddof=1)) if len(means) > 1 else math.nan,
            "min": float(per_seed["min"].mean()),
            "median": float(per_seed["median"].mean()),
            "max": float(per_seed["max"].mean()),
        }
    return out


def pct(x: float, std: float | None = None) -> str:
    """Format a fraction as a percentage with two decimals, ``± std`` when given."""
    if math.isnan(x):
        return "n/a"
    text = f"{100 * x:.2f}"
    if std is not None and not math.isnan(std):
        text += f" ± {100 * std:.2f}"
    return text + " %"


def ua_table(stats: Mapping[str, Mapping[str, float]], order: Sequence[str]) -> pd.DataFrame:
    """Return the mean-UA table: every method of ``order``, ours beside PerFit's."""
    rows = []
    for method in order:
        s = stats.get(method)
        if s is None:
            ours, lo, med = "not run", "–", "–"
        else:
            ours, lo, med = pct(s["mean"], s["std"]), pct(s["min"]), pct(s["median"])
        rows.append({
            "method": method,
            "kind": kind_of(method),
            "mean UA (ours, ± std over seeds)": ours,
            "min device UA": lo,
            "median device UA": med,
            "PerFit (MobiAct)": PAPER.get(method, "–"),
        })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- communication


def bytes_per_round(runs: Sequence[RunData]) -> dict[str, tuple[float, float, float]]:
    """Return per method the mean bytes up and down per device per round, and the round.

    Up and down are means over the ``completed`` rows of ``device_rounds.csv`` (every
    seed); the round is the mean round duration (virtual seconds). Methods in run order.
    """
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        groups.setdefault(run.params[KEY], []).append(run)
    out = {}
    for method, rs in groups.items():
        done = pd.concat(
            [r.device_rounds[r.device_rounds["status"] == "completed"] for r in rs],
            ignore_index=True,
        )
        up = float(pd.to_numeric(done["bytes_up"]).mean()) if len(done) else math.nan
        down = float(pd.to_numeric(done["bytes_down"]).mean()) if len(done) else math.nan
        dur = np.mean([(r.rounds["virtual_time_s"] - r.rounds["round_start_s"]).mean() for r in rs])
        out[str(method)] = (up, down, float(dur))
    return out


def num(x: float) -> str:
    """Format a byte or value count with thousands separators (``n/a`` for NaN)."""
    return "n/a" if math.isnan(x) else f"{x:,.0f}"


def comm_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """Return bytes per participating device per round for each federated method.

    Up and down as :func:`bytes_per_round`; ``values`` is the upload over 4 (float32);
    ``up vs FTL`` the upload relative to FTL's with the same model (n/a for FD-1, FD-2 and
    MOCHA, whose devices do not all run the 3NN or all the CNN); ``mean round`` the mean
    round duration (virtual seconds).
    """
    params_of: dict[str, int | None] = {}
    for run in runs:
        params_of.setdefault(str(run.params[KEY]), run.meta.get("model", {}).get("num_params"))
    measured = bytes_per_round(runs)
    ftl_up = {model_of(m): v[0] for m, v in measured.items() if m == f"FTL-{model_of(m)}"}
    rows = []
    for method, (up, down, dur) in measured.items():
        params = params_of.get(method)
        ref = ftl_up.get(model_of(method)) if model_of(method) else None
        rows.append({
            "method": method,
            "model parameters": (
                f"mixed ({OTHERS[method][3]})" if method in MIXED
                else "n/a" if params is None else f"{int(params):,}"
            ),  # fmt: skip
            "up per device per round (B)": num(up),
            "values (float32)": num(up / 4),
            "down per device per round (B)": num(down),
            "up vs FTL": "n/a" if not ref else f"{up / ref:.4f}",
            "mean round (virtual s)": f"{dur:.1f}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def ratio(x: float, ref: float | None) -> str:
    """Return ``x / ref`` and how many times fewer (``n/a`` without a reference)."""
    if not ref or math.isnan(x) or math.isnan(ref):
        return "n/a"
    return f"{x / ref:.4f} ({ref / x:.1f}x fewer)" if x < ref else f"{x / ref:.4f}"


def fd_comm_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """Return FD's and MOCHA's measured bytes per device per round against FTL's.

    One row per method of :data:`~analysis.perfit_methods.OTHERS` that ran: its devices'
    models, its upload and download (:func:`bytes_per_round`) and its upload over the
    measured uploads of FTL-3NN and FTL-CNN.
    """
    measured = bytes_per_round(runs)
    refs = {m: measured.get(f"FTL-{m}", (math.nan,))[0] for m in ("3NN", "CNN")}
    rows = []
    for method, (_, _, _, models) in OTHERS.items():
        if method not in measured:
            continue
        up, down, _ = measured[method]
        rows.append({
            "method": method,
            "devices' models": models,
            "up per device per round (B)": num(up),
            "down per device per round (B)": num(down),
            f"up vs FTL-3NN ({num(refs['3NN'])} B)": ratio(up, refs["3NN"]),
            f"up vs FTL-CNN ({num(refs['CNN'])} B)": ratio(up, refs["CNN"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def paper_comm_table() -> pd.DataFrame:
    """Return PerFit's communication per device per round (Sec. V-B, Fig. 8): its numbers."""
    rows = []
    for model, params in PAPER_PARAMS.items():
        rows.append({
            "method (PerFit)": f"FTL-{model}", "values per device per round": f"{params:,}",
            "FD / FTL": "–",
        })  # fmt: skip
    ratios = ", ".join(
        f"{PAPER_FD_VALUES / p:.4f} of FTL-{m} ({p / PAPER_FD_VALUES:.1f}x fewer)"
        for m, p in PAPER_PARAMS.items()
    )
    rows.append({
        "method (PerFit)": "FD-1, FD-2 (500 samples x 10 class scores)",
        "values per device per round": f"{PAPER_FD_VALUES:,}", "FD / FTL": ratios,
    })  # fmt: skip
    return pd.DataFrame(rows)


def convergence_points(runs: Sequence[RunData], count: int = 5) -> list[int]:
    """Return up to ``count`` evaluated versions, evenly spread, the last one included."""
    evaluated = sorted(
        {int(v) for r in runs for v in r.rounds.loc[r.rounds["ua_mean"].notna(), "version"]}
    )
    if len(evaluated) <= count:
        return evaluated
    picks = np.linspace(0, len(evaluated) - 1, count).round().astype(int)
    return [evaluated[i] for i in sorted(set(picks))]


def ua_at_rounds(runs: Sequence[RunData], points: Sequence[int]) -> pd.DataFrame:
    """Return mean ± std over seeds of ``ua_mean`` at the evaluated versions ``points``."""
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        groups.setdefault(run.params[KEY], []).append(run)
    rows = []
    for method, rs in groups.items():
        row = {"method": method}
        for n in points:
            vals = []
            for r in rs:
                hit = r.rounds.loc[r.rounds["version"] == n, "ua_mean"]
                if len(hit) and not pd.isna(hit.iloc[0]):
                    vals.append(float(hit.iloc[0]))
            arr = np.array(vals)
            spread = arr.std(ddof=1) if len(arr) > 1 else None
            row[f"round {n}"] = pct(arr.mean(), spread) if len(arr) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def rising_sentence(runs: Sequence[RunData], points: Sequence[int]) -> str:
    """Return which methods gained more than their std over seeds between the last two points."""
    if len(points) < 2:
        return ""
    a, b = points[-2], points[-1]
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        groups.setdefault(run.params[KEY], []).append(run)
    rising = []
    for method, rs in groups.items():
        ends = []
        for n in (a, b):
            vals = [r.rounds.loc[r.rounds["version"] == n, "ua_mean"] for r in rs]
            ends.append(np.array([float(v.iloc[0]) for v in vals if len(v)]))
        if not (len(ends[0]) and len(ends[1])):
            continue
        gain = ends[1].mean() - ends[0].mean()
        spread = ends[1].std(ddof=1) if len(ends[1]) > 1 else 0.0
        if gain > spread:
            rising.append(f"{method} ({100 * gain:+.2f} points)")
    if not rising:
        return f"From round {a} to {b} no method gained more than its std over seeds at round {b}."
    return (
        f"Gained more than their std over seeds from round {a} to {b}, so still rising at "
        f"the end: {', '.join(rising)}."
    )
