"""The run folder, written as the run goes: result rows streamed, run.json at the end.

While a run is going (or after it crashed) its folder holds ``run.partial.json`` (the
resolved scenario, profiles and versions; ``"complete": false``) and the result tables up
to the last finished round, flushed after every round. A finished run replaces
``run.partial.json`` by ``run.json`` (with the summary): ``run.json`` present means
complete.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from fedsim.errors import InputError

PARTIAL = "run.partial.json"
FINAL = "run.json"


def csv_cell(value: object) -> object:
    """Format one CSV cell: None is empty, floats use Python's shortest exact repr."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that exists, or that cannot be made (nothing is overwritten)."""
    if out_dir.exists():
        raise InputError(f"{out_dir}: output folder already exists; choose another --out")
    problem = creatable_problem(out_dir.parent)
    if problem is not None:
        raise InputError(f"{out_dir}: cannot create the output folder: {problem}")


def creatable_problem(folder: Path) -> str | None:
    """Return why ``folder`` (or a file in it) cannot be made, or None if it can.

    Walks up to the nearest existing folder and makes and removes a folder there:
    permission bits do not tell (root, ``/proc``, a read-only mount). Nothing is left.
    """
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedsim-probe-", dir=parent))
    except OSError as exc:
        return f"cannot write in {parent}: {exc.strerror}"
    return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON: a temporary file, fsync, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Totals:
    """The run's summary, kept up to date round by round (so no row is held in memory)."""

    rounds: int = 0
    versions: int = 0
    virtual_time_s: float = 0.0
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    final_ua_mean: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    energy_j: float = 0.0
    stragglers: int = 0
    dropped: int = 0

    def add(self, row: dict[str, Any]) -> None:
        """Count one round's row."""
        self.rounds += 1
        self.versions = int(row["version"])
        self.virtual_time_s = float(row["virtual_time_s"])
        acc = row.get("accuracy")
        if acc is not None and not (isinstance(acc, float) and math.isnan(acc)):
            self.final_accuracy = float(acc)
            best = self.best_accuracy
            self.best_accuracy = self.final_accuracy if best is None else max(best, float(acc))
        ua = row.get("ua_mean")
        if ua is not None and not (isinstance(ua, float) and math.isnan(ua)):
            self.final_ua_mean = float(ua)
        self.bytes_up += int(row["bytes_up"])
        self.bytes_down += int(row["bytes_down"])
        self.energy_j += float(row["energy_j"])
        self.stragglers += int(row["stragglers"])
        self.dropped += int(row["dropped"])

    def summary(self, stopped_by: str) -> dict[str, Any]:
        """Return the summary of ``run.json``."""
        return {**asdict(self), "stopped_by": stopped_by}


class RunFolder:
    """A run folder being written: three CSV tables appended round by round.

    Parameters
    ----------
    path : Path
        The run folder (made by :meth:`create`, or reopened by :meth:`reopen`).
    tables : dict of str to column names
        File name -> its columns.
    """

    def __init__(self, path: Path, tables: dict[str, Sequence[str]]) -> None:
        self.path = path
        self.tables = tables
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        path: Path,
        tables: dict[str, Sequence[str]],
        meta: dict[str, Any],
        resume_info: dict[str, Any] | None = None,
    ) -> RunFolder:
        """Make the folder (it must not exist: two runs never share one) and the headers.

        ``resume_info`` goes into ``run.partial.json`` only (``"resume"``): what a resume
        needs and ``run.json`` must not hold (e.g. the scenario file's absolute path).
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            message = f"{path}: output folder already exists; choose another --out"
            raise InputError(message) from None
        except OSError as exc:
            raise InputError(f"{path}: cannot create the output folder: {exc.strerror}") from None
        folder = cls(path, tables)
        write_json_atomic(path / PARTIAL, {**meta, "complete": False, "resume": resume_info or {}})
        folder._start_tables()
        return folder

    @classmethod
    def reopen(
        cls, path: Path, tables: dict[str, Sequence[str]], sizes: dict[str, int] | None
    ) -> RunFolder:
        """Reopen a folder to append, cutting each table back to ``sizes`` (bytes).

        ``sizes`` None: start the tables over (a run killed before its first checkpoint).
        """
        folder = cls(path, tables)
        if sizes is None:
            folder._start_tables()
            return folder
        for name, size in sizes.items():
            with (path / name).open("r+b") as f:
                f.truncate(size)
        folder._open("a")
        return folder

    def _start_tables(self) -> None:
        """Open the tables empty and write their headers."""
        self._open("w")
        for name, columns in self.tables.items():
            self._writers[name].writerow(columns)
        self.flush()

    def _open(self, mode: str) -> None:
        for name in self.tables:
            f = (self.path / name).open(mode, encoding="utf-8", newline="")
            self._files[name] = f
            self._writers[name] = csv.writer(f, lineterminator="\n")

    def append(self, name: str, rows: Iterable[Sequence[object]]) -> None:
        """Append rows to table ``name``."""
        self._writers[name].writerows([csv_cell(v) for v in row] for row in rows)

    def flush(self) -> None:
        """Hand everything written so far to the operating system (survives a crash)."""
        for f in self._files.values():
            f.flush()

    def sizes(self) -> dict[str, int]:
        """Return each table's size in bytes, after a flush."""
        self.flush()
        return {name: f.tell() for name, f in self._files.items()}

    def close(self) -> None:
        """Flush, fsync and close the tables."""
        for f in self._files.values():
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def finish(self, meta: dict[str, Any], extra: dict[str, str]) -> None:
        """Close the tables, write ``extra`` files, then ``run.json``: the run is complete."""
        self.close()
        for name, text in extra.items():
            (self.path / name).write_text(text, encoding="utf-8")
        write_json_atomic(self.path / FINAL, meta)
        (self.path / PARTIAL).unlink(missing_ok=True)


STRING_COLUMNS = ("profile", "link", "status", "plan")


def read_table(path: Path) -> pd.DataFrame:
    """Read a result table: floats exactly as written, text columns as text.

    pandas 3 parses the shortest-repr floats the tables hold back exactly.
    """
    return pd.read_csv(path, dtype=dict.fromkeys(STRING_COLUMNS, str))


def default_out_dir(name: str, root: Path = Path("runs")) -> Path:
    """Return ``runs/<name>-<n>`` for the first ``n`` not yet used."""
    n = 1
    while (root / f"{name}-{n}").exists():
        n += 1
    return root / f"{name}-{n}"
