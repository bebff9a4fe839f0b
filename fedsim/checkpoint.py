"""Checkpoints of a synchronous run at a round boundary, and loading them back.

A checkpoint holds what training and the run's history changed; the clock's state is
rebuilt from the seed (DESIGN.md section 5): the virtual time, the edges' model state,
the offloading planner's memory (whose data the edges hold; recent plans), the loop's
counters, the summary so far and the size of each result table. The models go in a
``checkpoint-<round>.pt`` file (tensors only, loaded with ``weights_only=True``), the
rest in ``checkpoint.json``, which names the model file and its SHA-256. Both are written
to a temporary name, fsynced and renamed, the JSON last: a kill at any moment leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedsim.errors import InputError
from fedsim.results import write_json_atomic

FORMAT_VERSION = 1
INDEX = "checkpoint.json"


@dataclass
class LoopState:
    """The round loop's position: the next round to run and its counters."""

    next_round: int = 0
    version: int = 0
    evaluated_version: int = -1


@dataclass
class Checkpoint:
    """Everything a resumed run needs besides the models.

    Attributes
    ----------
    loop : LoopState
        Where the loop stands.
    now_s : float
        Virtual time at the round boundary.
    pending_edges, stale_edges : list of int
        Edges holding updates the cloud has not aggregated; edges without the global model.
    data_at_edge : list of int
        Devices whose training data their edge holds (``full`` offloading).
    history : dict of str to list
        Per device, its recent rounds for policies (``HistoryEntry`` fields).
    totals : dict
        The summary so far (:class:`fedsim.results.Totals`).
    table_bytes : dict of str to int
        Each result table's size at the checkpoint.
    wall_s_per_round : list of float
        Wall-clock seconds of the rounds so far (timings.json).
    """

    loop: LoopState
    now_s: float
    pending_edges: list[int]
    stale_edges: list[int]
    data_at_edge: list[int]
    history: dict[str, list[list[Any]]]
    totals: dict[str, Any]
    table_bytes: dict[str, int]
    wall_s_per_round: list[float] = field(default_factory=list)


def save(run_dir: Path, ckpt: Checkpoint, models: dict[str, Any]) -> None:
    """Write a checkpoint into ``run_dir`` atomically; drop the previous model file."""
    name = f"checkpoint-{ckpt.loop.next_round}.pt"
    buf = io.BytesIO()
    torch.save(models, buf)
    data = buf.getvalue()
    tmp = run_dir / f".{name}.tmp"
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / name)
    index = {
        "format_version": FORMAT_VERSION,
        "models": name,
        "models_sha256": hashlib.sha256(data).hexdigest(),
        "state": asdict(ckpt),
    }
    old = _index(run_dir)
    write_json_atomic(run_dir / INDEX, index)
    if old is not None and old.get("models") != name:
        (run_dir / str(old["models"])).unlink(missing_ok=True)


def _index(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / INDEX
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable checkpoint: {exc}") from None
    return data if isinstance(data, dict) else None


def next_round(run_dir: Path) -> int:
    """Return the round a resume starts from (0: no checkpoint yet)."""
    index = _index(run_dir)
    return int(index["state"]["loop"]["next_round"]) if index is not None else 0


def load(run_dir: Path) -> tuple[Checkpoint, dict[str, Any]] | None:
    """Return the folder's checkpoint and its models (None: the run has none yet).

    Raises
    ------
    InputError
        A checkpoint of another format version, or whose model file is missing or altered.
    """
    index = _index(run_dir)
    if index is None:
        return None
    path = run_dir / INDEX
    if index.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path}: format_version: expected {FORMAT_VERSION}, got "
            f"{index.get('format_version')!r} (written by another fedsim version)"
        )
    models_path = run_dir / str(index["models"])
    data = models_path.read_bytes() if models_path.is_file() else b""
    if not data or hashlib.sha256(data).hexdigest() != index["models_sha256"]:
        raise InputError(f"{models_path}: missing or altered (its SHA-256 does not match)")
    models = torch.load(io.BytesIO(data), weights_only=True)
    state = dict(index["state"])
    state["loop"] = LoopState(**state["loop"])
    return Checkpoint(**state), models


def remove(run_dir: Path) -> None:
    """Delete a finished run's checkpoint files."""
    index = _index(run_dir)
    if index is not None:
        (run_dir / str(index["models"])).unlink(missing_ok=True)
    (run_dir / INDEX).unlink(missing_ok=True)
    for stale in run_dir.glob(".checkpoint-*.pt.tmp"):
        stale.unlink()
