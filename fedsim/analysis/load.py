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
    "config_labels",
    "is_run_dir",
    "is_sweep_dir",
    "rounds_frame",
    "device_rounds_frame",
    "device_ua_frame",
    "updates_frame",
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
UPDATE_COLUMNS = [
    "dispatch", "source", "device_id", "edge_id", "server", "base_version", "dispatch_s",
    "arrival_s", "staleness", "weight", "fate", "version", "applied_s",
]  # fmt: skip
_STRING_COLUMNS = {"edge_id", "profile", "link", "status", "plan", "source", "server", "fate"}
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
        ``rounds.csv``, one row per round (per global version in an asynchronous run),
        sorted by ``virtual_time_s``.
    device_rounds : pandas.DataFrame
        ``device_rounds.csv`` (empty with the right columns if the file is missing).
    device_ua : pandas.DataFrame
        ``device_ua.csv`` (empty with the right columns if the file is missing).
    params : dict of str to str
        Grid values of this run within a sweep (empty for a lone run).
    config : str
        The configuration's label among loose runs (see :func:`load_runs`); empty for
        the scenario name.
    updates : pandas.DataFrame
        ``updates.csv`` of an asynchronous run, one row per update (empty with the right
        columns if the file is missing, as for every synchronous run).
    """

    run_dir: Path
    run_id: str
    meta: dict[str, Any]
    rounds: pd.DataFrame
    device_rounds: pd.DataFrame
    device_ua: pd.DataFrame
    params: dict[str, str] = field(default_factory=dict)
    config: str = ""
    updates: pd.DataFrame = field(default_factory=lambda: _empty_frame(UPDATE_COLUMNS))

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
    def is_async(self) -> bool:
        """Return True for an asynchronous run (``rounds.kind: async``, or update rows).

        Its ``rounds.csv`` rows are global model versions, not rounds (docs/async.md).
        """
        rounds = self.scenario.get("rounds")
        kind = rounds.get("kind") if isinstance(rounds, dict) else None
        return kind == "async" or not self.updates.empty

    @property
    def label(self) -> str:
        """Return a label naming the run's configuration without its seed."""
        if self.params:
            return ", ".join(f"{_short_key(k)}={v}" for k, v in self.params.items())
        return self.config or str(self.scenario.get("name", self.run_id))


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

    def __post_init__(self) -> None:
        ids = [r.run_id for r in self.runs]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:  # tables key runs by id: repeats would be summed together
            raise ValueError(
                f"run ids repeat in one RunSet: {', '.join(repeated)}; give each run a "
                "unique run_id (e.g. prefix the sweep's name) before combining runs"
            )

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

    def updates(self) -> pd.DataFrame:
        """Return all runs' asynchronous updates as one tidy frame."""
        return updates_frame(self.runs, self.grid_keys)


def _short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def is_run_dir(path: str | Path) -> bool:
    """Return True if ``path`` is a complete run folder (it holds ``run.json``)."""
    return (Path(path) / "run.json").is_file()


def is_sweep_dir(path: str | Path) -> bool:
    """Return True if ``path`` is a sweep folder (it holds ``index.csv``)."""
    return (Path(path) / "index.csv").is_file()


def _empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=object if c in _STRING_COLUMNS else float) for c in columns}
    )


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return _empty_frame(columns)
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
        updates=_read_csv(run_dir / "updates.csv", UPDATE_COLUMNS),
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
        configuration); stored as the grid key ``config``. Without labels, runs whose
        resolved scenarios (``run.json``) are equal but for the seed are seeds of one
        configuration (see :func:`config_labels`).

    Returns
    -------
    RunSet
    """
    paths = list(paths)
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} runs")
    runs = []
    names = [Path(p).name for p in paths]
    for i, p in enumerate(paths):
        params = {"config": str(labels[i])} if labels is not None else None
        # folders of the same name (two sweeps' seed=1) are told apart by their path
        run_id = str(p) if names.count(names[i]) > 1 else None
        runs.append(load_run(p, params=params, run_id=run_id))
    if labels is None:
        for run, label in zip(runs, config_labels(runs), strict=True):
            run.config = label
    return RunSet(runs=runs, grid_keys=["config"] if labels is not None else [])


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Return a nested dict or list as ``{"a.b.0.c": leaf}``."""
    if isinstance(value, dict) and value:
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for k, v in items:
        flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def _scenario_key(run: RunData) -> str:
    """Return the run's resolved scenario without its seed, as canonical JSON."""
    scenario = {k: v for k, v in run.scenario.items() if k != "seed"}
    return json.dumps(scenario, sort_keys=True, default=str)


def config_labels(runs: Sequence[RunData], max_fields: int = 3) -> list[str]:
    """Return a configuration label per run: equal labels for equal scenarios but the seed.

    Runs are seeds of one configuration when their resolved scenarios (``run.json``) are
    equal once the seed is removed. A configuration is labelled by its scenario name;
    when configurations share a name, the label adds the fields in which they differ,
    e.g. ``quickstart [participants=5, deadline_s=0.8]`` (at most ``max_fields``, then
    ``#2``, ``#3``... in order of first appearance).

    Parameters
    ----------
    runs : sequence of RunData
        The runs.
    max_fields : int
        Most differing fields to name in a label.

    Returns
    -------
    list of str
        One label per run, in order.
    """
    keys = [_scenario_key(r) for r in runs]
    first: dict[str, RunData] = {}
    for key, run in zip(keys, runs, strict=True):
        first.setdefault(key, run)
    by_name: dict[str, list[str]] = {}
    for key, run in first.items():
        by_name.setdefault(str(run.scenario.get("name", run.run_id)), []).append(key)
    label: dict[str, str] = {}
    for name, group in by_name.items():
        if len(group) == 1:
            label[group[0]] = name
            continue
        flat = [_flatten(json.loads(k)) for k in group]
        every = list(dict.fromkeys(f for d in flat for f in d))
        fields = [f for f in every if _differs(flat, f)]
        short = _unique_suffixes(fields[:max_fields], every)
        for i, (key, d) in enumerate(zip(group, flat, strict=True)):
            parts = [f"{short[f]}={d.get(f)}" for f in fields[:max_fields]]
            named = len(fields) <= max_fields
            label[key] = f"{name} [{', '.join(parts)}]" if named else f"{name} #{i + 1}"
    return [label[k] for k in keys]


def _unique_suffixes(fields: Sequence[str], among: Sequence[str]) -> dict[str, str]:
    """Return each dotted path's shortest suffix that no other path of ``among`` ends with.

    A suffix starts with a name, not a list index (``edges.0.count``, not ``0.count``).
    """
    out = {}
    for f in fields:
        parts = f.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if parts[-n].isdigit() and n < len(parts):  # name the list: edges.0, not 0
                continue
            if not any(g != f and (g == tail or g.endswith("." + tail)) for g in among):
                break
        out[f] = tail
    return out


def _differs(flat: list[dict[str, Any]], field: str) -> bool:
    values = [json.dumps(d.get(field), sort_keys=True, default=str) for d in flat]
    return len(set(values)) > 1


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
    if not subdirs and (path / "run.partial.json").is_file():
        raise FileNotFoundError(
            f"{path}: the run is not complete (run.partial.json, no run.json): let it finish, "
            f"or continue it with: fedsim resume {path}"
        )
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


def updates_frame(runs: Sequence[RunData], grid_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Stack the runs' ``updates.csv`` (asynchronous runs) into one frame with run columns."""
    return _tidy(runs, grid_keys, "updates")
