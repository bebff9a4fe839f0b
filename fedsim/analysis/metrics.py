"""Time and rounds to a target metric per run, and their mean and confidence interval over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsim.analysis.load import RunData, RunSet

__all__ = [
    "MIN_SEEDS_FOR_CI",
    "NOT_REACHED",
    "MeanCI",
    "mean_ci",
    "metric_range",
    "time_to_target",
    "rounds_to_target",
    "target_frame",
    "target_summary",
]

#: What tables show where a target was not reached (never a silent NaN).
NOT_REACHED = "not reached"
#: Fewest seeds for which a Student-t interval is shown; with fewer (t(0.975, 1) = 12.7),
#: tables and plots show the min–max over the seeds instead.
MIN_SEEDS_FOR_CI = 3

_UNIT_INTERVAL = ("accuracy", "ua_mean", "ua_p10", "ua_p50", "ua_p90", "final_accuracy")
_NON_NEGATIVE = ("loss", "rounds", "round_index", "participants", "completed", "stragglers")
_NON_NEGATIVE_SUFFIXES = ("_s", "_j", "_kj", "_mb", "_gb", "_pct")


def metric_range(metric: str) -> tuple[float, float]:
    """Return the physical range of a quantity of the result files, by its column name.

    Accuracies (``accuracy``, ``ua_*``, ``final_*accuracy``) lie in [0, 1]; times
    (``*_s``), energies (``*_j``), bytes, losses, counts and shares are non-negative;
    anything else is unbounded.

    Parameters
    ----------
    metric : str
        A column name, e.g. ``accuracy``, ``round_time_s``, ``cum_bytes``, ``energy_j``.

    Returns
    -------
    tuple of float
        ``(low, high)``, either possibly infinite.
    """
    if metric in _UNIT_INTERVAL or metric.startswith("ua_") or metric.endswith("accuracy"):
        return 0.0, 1.0
    if (
        metric in _NON_NEGATIVE
        or metric.endswith(_NON_NEGATIVE_SUFFIXES)
        or "bytes" in metric
        or "energy" in metric
    ):
        return 0.0, math.inf
    return -math.inf, math.inf


def _rounds_of(run: RunData | pd.DataFrame) -> pd.DataFrame:
    return run.rounds if isinstance(run, RunData) else run


def _first_hit(rounds: pd.DataFrame, metric: str, target: float) -> int | None:
    """Return the positional index of the first round whose ``metric`` is >= ``target``."""
    if metric not in rounds.columns:
        raise KeyError(f"no column {metric!r} in rounds.csv (have: {', '.join(rounds.columns)})")
    values = pd.to_numeric(rounds[metric], errors="coerce").to_numpy(dtype=float)
    hits = np.flatnonzero(values >= target)  # NaN (not evaluated) compares False
    return int(hits[0]) if hits.size else None


def time_to_target(
    run: RunData | pd.DataFrame, metric: str = "accuracy", target: float = 0.9
) -> float | None:
    """Return the virtual time at which ``metric`` first reaches ``target``.

    The time is the ``virtual_time_s`` of the first evaluated round whose ``metric``
    is at least ``target``: the virtual time at which that model version exists.

    Parameters
    ----------
    run : RunData or pandas.DataFrame
        A run, or its ``rounds.csv`` frame.
    metric : str
        A column of ``rounds.csv`` (``accuracy``, ``ua_mean``, ``ua_p10``, ...).
    target : float
        The threshold (inclusive).

    Returns
    -------
    float or None
        Virtual seconds, or None if the run never reached the target.
    """
    rounds = _rounds_of(run)
    i = _first_hit(rounds, metric, target)
    return None if i is None else float(rounds["virtual_time_s"].iloc[i])


def rounds_to_target(
    run: RunData | pd.DataFrame, metric: str = "accuracy", target: float = 0.9
) -> int | None:
    """Return how many rounds ran until ``metric`` first reached ``target``.

    Rounds are counted in order of ``virtual_time_s``, the first round being 1, as in
    MTFL's Tables 2-3 ("communication rounds required to reach the target").

    Parameters
    ----------
    run : RunData or pandas.DataFrame
        A run, or its ``rounds.csv`` frame.
    metric : str
        A column of ``rounds.csv``.
    target : float
        The threshold (inclusive).

    Returns
    -------
    int or None
        The number of rounds, or None if the run never reached the target.
    """
    i = _first_hit(_rounds_of(run), metric, target)
    return None if i is None else i + 1


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with a two-sided Student-t confidence interval.

    ``low`` and ``high`` equal ``mean`` for a single value (no spread can be estimated);
    all are NaN for an empty sample. ``low`` and ``high`` may have been clipped to a
    physical range (see :func:`mean_ci`), so the interval need not be symmetric.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        """Return half the interval's width."""
        return (self.high - self.low) / 2


def mean_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> MeanCI:
    """Return the mean of ``values`` and its Student-t confidence interval.

    Parameters
    ----------
    values : sequence of float
        One value per seed.
    confidence : float
        Two-sided coverage, e.g. 0.95.
    bounds : tuple of float, optional
        The quantity's physical range (e.g. :func:`metric_range`): the interval is
        clipped to it (with 2 seeds a 95 % interval of an accuracy easily spans -1 to 2).
    """
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(arr.mean())
    if n == 1:
        return MeanCI(mean, mean, mean, 1, confidence)
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    from scipy.stats import t as student_t  # imported here: scipy.stats is slow to load

    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sem
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return MeanCI(mean, low, high, n, confidence)


def _runs_list(runs: RunSet | Sequence[RunData]) -> tuple[list[RunData], list[str]]:
    if isinstance(runs, RunSet):
        return list(runs.runs), list(runs.grid_keys)
    return list(runs), []


def target_frame(
    runs: RunSet | Sequence[RunData], metric: str = "accuracy", target: float = 0.9
) -> pd.DataFrame:
    """Return one row per run with its time and rounds to target.

    Columns: ``run_id``, ``label``, one per grid key, ``seed``, ``reached`` (bool),
    ``time_s`` and ``rounds`` (NaN where ``reached`` is False — the flag says why).
    """
    run_list, keys = _runs_list(runs)
    rows = []
    for run in run_list:
        t = time_to_target(run, metric, target)
        r = rounds_to_target(run, metric, target)
        row: dict[str, object] = {"run_id": run.run_id, "label": run.label}
        row.update({k: run.params.get(k, "") for k in keys})
        row.update(
            seed=run.seed,
            reached=t is not None,
            time_s=math.nan if t is None else t,
            rounds=math.nan if r is None else r,
        )
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["run_id", "label", *keys, "seed", "reached", "time_s", "rounds"]
    )


def target_summary(
    runs: RunSet | Sequence[RunData],
    metric: str = "accuracy",
    target: float = 0.9,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Aggregate time and rounds to target over the seeds of each configuration.

    Parameters
    ----------
    runs : RunSet or sequence of RunData
        The runs.
    metric, target : str, float
        As in :func:`time_to_target`.
    by : sequence of str, optional
        Columns that name a configuration; default: the grid keys, else ``label``.
    confidence : float
        Coverage of the Student-t interval.

    Returns
    -------
    pandas.DataFrame
        One row per configuration: the ``by`` columns, ``n_runs``, ``n_reached``,
        ``status`` (``"reached"``, ``"partly reached"`` or ``"not reached"``), and for
        ``time_s`` and ``rounds``: ``*_mean``, ``*_ci_low``, ``*_ci_high`` (clipped to
        0 s and 1 round), ``*_min`` and ``*_max`` over the seeds that reached the
        target. With ``status == "not reached"`` these are NaN and the status string
        says so; tables show the string, never the NaN.
    """
    per_run = target_frame(runs, metric, target)
    _, keys = _runs_list(runs)
    by = list(by) if by is not None else (keys or ["label"])
    out_rows = []
    for values, group in per_run.groupby(by, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        reached = group[group["reached"]]
        n_runs, n_reached = len(group), len(reached)
        status = (
            "reached"
            if n_reached == n_runs
            else "not reached"
            if n_reached == 0
            else "partly reached"
        )
        row: dict[str, object] = dict(zip(by, values, strict=True))
        row.update(n_runs=n_runs, n_reached=n_reached, status=status)
        for col, floor in (("time_s", 0.0), ("rounds", 1.0)):
            vals = reached[col].to_numpy(dtype=float)
            ci = mean_ci(vals, confidence, bounds=(floor, math.inf))
            row.update({f"{col}_mean": ci.mean, f"{col}_ci_low": ci.low, f"{col}_ci_high": ci.high})
            row.update(
                {
                    f"{col}_min": float(vals.min()) if vals.size else math.nan,
                    f"{col}_max": float(vals.max()) if vals.size else math.nan,
                }
            )
        out_rows.append(row)
    return pd.DataFrame(out_rows)
