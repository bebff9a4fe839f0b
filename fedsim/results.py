"""The run folder: result tables, run.json and wall-clock timings, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fedsim.errors import InputError


def _cell(value: object) -> object:
    """Format one CSV cell: None is empty, floats use Python's shortest exact repr."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Return a CSV document with a header row and Unix line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that already exists (nothing is overwritten)."""
    if out_dir.exists():
        raise InputError(f"{out_dir}: output folder already exists; choose another --out")


def write_run_folder(out_dir: Path, files: dict[str, str], meta: dict[str, Any]) -> Path:
    """Write all files into a temporary sibling folder, then rename it to ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        The final run folder; must not exist.
    files : dict of str to str
        File name -> text content.
    meta : dict
        Written as ``run.json`` (sorted keys, so it is byte-stable).
    """
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "run.json").write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def default_out_dir(name: str, root: Path = Path("runs")) -> Path:
    """Return ``runs/<name>-<n>`` for the first ``n`` not yet used."""
    n = 1
    while (root / f"{name}-{n}").exists():
        n += 1
    return root / f"{name}-{n}"
