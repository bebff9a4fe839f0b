"""Read run folders and sweep folders into tidy pandas DataFrames."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "RunData",
    "RunSet",
    "load",
    "load_run",
    "load_runs",
    "load_sweep",
    "is_run_dir",
    "is_sweep_dir",
    "rounds_frame",
    "device_rounds_frame",
    "device_ua_frame",
]

ROUND_COLUMNS = [
    "version", "round", "round_start_s", "virtual_time_s", "participants", "completed",
    "stragglers", "dropped", "bytes_up", "bytes_down", "energy_j", "download_s", "compute_s",
    "upload_s", "wait_s", "edge_s", "cloud_s", "accuracy", "loss", "ua_mean", "ua_p10",
    "ua_p50", "ua_p90",
]  # fmt: skip
DEVICE_ROUND_COLUMNS = [
    "round", "device_id", "edge_id", "profile", "link", "status", "start_s", "end_s",
    "download_s", "compute_s", "upload_s", "wait_s", "bytes_up", "bytes_down", "energy_j",
]  # fmt: skip
DEVICE_UA_COLUMNS = ["version", "device_id", "accuracy"]
_STRING_COLUMNS = {"edge_id", "profile", "link", "status", "plan"}
_BOOL_COLUMNS = {"raw_data_left"}


@dataclass
class RunData:
    """One run folder, read into memory.

    Attributes
    ----------
    run_dir : Path
        The folder the files were read from.
    run_id : str
        A short name for the run (the sweep's run id, else the folder name).
    meta : dict
        The parsed ``run.json``.
    rounds : pandas.DataFrame
        ``rounds.csv``, one row per round, sorted by ``virtual_time_s``.
    device_rounds : pandas.DataFrame
        ``device_rounds.csv`` (empty with the right columns if the file is missing).
    device_ua : pandas.DataFrame
        ``device_ua.csv`` (empty with the right columns if the file is missing).
    params : dict of str to str
        Grid values of this run within a sweep (empty for a lone run).
    """

    run_dir: Path
    run_id: str
    meta: dict[str, Any]
    rounds: pd.DataFrame
    device_rounds: pd.DataFrame
    device_ua: pd.DataFrame
    params: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """Return the run's seed."""
        return int(self.meta.get("seed", self.scenario.get("seed", 0)))

    @property
    def scenario(self) -> dict[str, Any]:
        """Return the resolved scenario dict from ``run.json``."""
        return dict(self.meta.get("scenario", {}))

    @property
    def summary(self) -> dict[str, Any]:
        """Return the ``summary`` dict from ``run.json``."""
        return dict(self.meta.get("summary", {}))

    @property
    def label(self) -> str:
        """Return a label naming the run's configuration without its seed."""
        if self.params:
            return ", ".join(f"{_short_key(k)}={v}" for k, v in self.params.items())
        return str(self.scenario.get("name", self.run_id))


@dataclass
class RunSet:
    """Several runs, optionally from one sweep.

    Attributes
    ----------
    runs : list of RunData
        The runs, in index order.
    grid_keys : list of str
        The sweep's grid keys (configuration columns); empty for loose runs.
    index : pandas.DataFrame or None
        The sweep's ``index.csv``, if read from a sweep folder.
    sweep : dict or None
        The sweep's ``sweep.json``, if read from a sweep folder.
    root : Path or None
        The sweep folder, if any.
    """

    runs: list[RunData]
    grid_keys: list[str] = field(default_factory=list)
    index: pd.DataFrame | None = None
    sweep: dict[str, Any] | None = None
    root: Path | None = None

    def __iter__(self) -> Any:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, i: int) -> RunData:
        return self.runs[i]

    def rounds(self) -> pd.DataFrame:
        """Return all runs' rounds as one tidy frame (see :func:`rounds_frame`)."""
        return rounds_frame(self.runs, self.grid_keys)

    def device_rounds(self) -> pd.DataFrame:
        """Return all runs' device rounds as one tidy frame."""
        return device_rounds_frame(self.runs, self.grid_keys)

    def device_ua(self) -> pd.DataFrame:
        """Return all runs' per-device user accuracy as one tidy frame."""
        return device_ua_frame(self.runs, self.grid_keys)


def _short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def is_run_dir(path: str | Path) -> bool:
    """Return True if ``path`` is a complete run folder (it holds ``run.json``)."""
    return (Path(path) / "run.json").is_file()


def is_sweep_dir(path: str | Path) -> bool:
    """Return True if ``path`` is a sweep folder (it holds ``index.csv``)."""
    return (Path(path) / "index.csv").is_file()


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if c in _STRING_COLUMNS else float) for c in columns}
        )
    dtypes = {c: str for c in _STRING_COLUMNS | _BOOL_COLUMNS}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=True)
    for col in frame.columns:
        if col in _BOOL_COLUMNS:
            frame[col] = frame[col].map({"True": True, "False": False})
        elif col not in _STRING_COLUMNS and col != "device_id":
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def load_run(
    path: str | Path, run_id: str | None = None, params: dict[str, str] | None = None
) -> RunData:
    """Read one run folder.

    Parameters
    ----------
    path : str or Path
        A folder written by ``fedsim run`` (it must hold ``run.json`` and ``rounds.csv``).
    run_id : str, optional
        Name of the run; defaults to the folder name.
    params : dict, optional
        Grid values of the run within a sweep.

    Returns
    -------
    RunData

    Raises
    ------
    FileNotFoundError
        If ``run.json`` or ``rounds.csv`` is missing (an incomplete run).
    """
    run_dir = Path(path)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a complete run folder (no run.json)")
    if not (run_dir / "rounds.csv").is_file():
        raise FileNotFoundError(f"{run_dir}: not a complete run folder (no rounds.csv)")
    meta = json.loads(meta_path.read_text())
    rounds = _read_csv(run_dir / "rounds.csv", ROUND_COLUMNS)
    if len(rounds):
        rounds = rounds.sort_values(["virtual_time_s"], kind="stable").reset_index(drop=True)
    return RunData(
        run_dir=run_dir,
        run_id=run_id or run_dir.name,
        meta=meta,
        rounds=rounds,
        device_rounds=_read_csv(run_dir / "device_rounds.csv", DEVICE_ROUND_COLUMNS),
        device_ua=_read_csv(run_dir / "device_ua.csv", DEVICE_UA_COLUMNS),
        params=dict(params or {}),
    )


def load_runs(paths: Iterable[str | Path], labels: Sequence[str] | None = None) -> RunSet:
    """Read several run folders.

    Parameters
    ----------
    paths : iterable of str or Path
        Run folders.
    labels : sequence of str, optional
        A configuration label per run (runs sharing a label are seeds of one
        configuration); stored as the grid key ``config``. Without labels runs are
        grouped by scenario name.

    Returns
    -------
    RunSet
    """
    paths = list(paths)
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} runs")
    runs = []
    for i, p in enumerate(paths):
        params = {"config": str(labels[i])} if labels is not None else None
        runs.append(load_run(p, params=params))
    return RunSet(runs=runs, grid_keys=["config"] if labels is not None else [])


def load_sweep(path: str | Path, complete_only: bool = True) -> RunSet:
    """Read a sweep folder (``index.csv``, ``sweep.json`` and ``runs/``).

    Parameters
    ----------
    path : str or Path
        The sweep folder written by :func:`fedsim.sweep.run_sweep`.
    complete_only : bool
        Skip runs whose folder has no ``run.json`` (failed or not yet run); if False,
        such runs raise ``FileNotFoundError``.

    Returns
    -------
    RunSet
    """
    root = Path(path)
    index = pd.read_csv(root / "index.csv", dtype=str, keep_default_na=False)
    sweep_meta: dict[str, Any] = {}
    if (root / "sweep.json").is_file():
        sweep_meta = json.loads((root / "sweep.json").read_text())
    grid_keys = list(sweep_meta.get("grid", {}).keys())
    if not grid_keys:
        fixed = {"run_id", "seed", "status", "run_dir"}
        grid_keys = [c for c in index.columns if c not in fixed]
    runs = []
    for row in index.to_dict("records"):
        run_dir = Path(row["run_dir"])
        if not run_dir.is_absolute():
            run_dir = root / run_dir
        if complete_only and not is_run_dir(run_dir):
            continue
        params = {k: str(row[k]) for k in grid_keys}
        runs.append(load_run(run_dir, run_id=row["run_id"], params=params))
    return RunSet(runs=runs, grid_keys=grid_keys, index=index, sweep=sweep_meta, root=root)


def load(path: str | Path) -> RunSet:
    """Read a run folder, a sweep folder, or a folder of run folders.

    Parameters
    ----------
    path : str or Path
        A run folder, a sweep folder, or a folder whose subfolders are run folders.

    Returns
    -------
    RunSet
    """
    path = Path(path)
    if is_sweep_dir(path):
        return load_sweep(path)
    if is_run_dir(path):
        return RunSet(runs=[load_run(path)])
    subdirs = sorted(p for p in path.iterdir() if is_run_dir(p)) if path.is_dir() else []
    if not subdirs:
        raise FileNotFoundError(
            f"{path}: neither a run folder, a sweep folder nor a folder of run folders"
        )
    return load_runs(subdirs)


def _tidy(runs: Sequence[RunData], grid_keys: Sequence[str], attr: str) -> pd.DataFrame:
    frames = []
    for run in runs:
        frame = getattr(run, attr).copy()
        frame.insert(0, "run_id", run.run_id)
        frame.insert(1, "seed", run.seed)
        frame.insert(2, "label", run.label)
        for j, key in enumerate(grid_keys):
            frame.insert(3 + j, key, run.params.get(key, ""))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", "seed", "label", *grid_keys])
    return pd.concat(frames, ignore_index=True)


def rounds_frame(runs: Sequence[RunData], grid_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Stack the runs' ``rounds.csv`` into one frame.

    The frame gains ``run_id``, ``seed``, ``label`` and one column per grid key, plus
    ``round_index`` (1 for a run's first round), ``round_time_s`` and cumulative
    ``cum_bytes_up``, ``cum_bytes_down``, ``cum_bytes`` and ``cum_energy_j``.
    """
    frame = _tidy(runs, grid_keys, "rounds")
    if frame.empty:
        return frame
    grouped = frame.groupby("run_id", sort=False)
    frame["round_index"] = grouped.cumcount() + 1
    frame["round_time_s"] = frame["virtual_time_s"] - frame["round_start_s"]
    frame["cum_bytes_up"] = grouped["bytes_up"].cumsum()
    frame["cum_bytes_down"] = grouped["bytes_down"].cumsum()
    frame["cum_bytes"] = frame["cum_bytes_up"] + frame["cum_bytes_down"]
    frame["cum_energy_j"] = grouped["energy_j"].cumsum()
    return frame


def device_rounds_frame(runs: Sequence[RunData], grid_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Stack the runs' ``device_rounds.csv`` into one frame with run and grid columns."""
    return _tidy(runs, grid_keys, "device_rounds")


def device_ua_frame(runs: Sequence[RunData], grid_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Stack the runs' ``device_ua.csv`` into one frame with run and grid columns."""
    return _tidy(runs, grid_keys, "device_ua")
