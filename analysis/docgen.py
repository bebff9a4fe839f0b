"""Shared pieces of the scripts that regenerate docs.

Paths, the commit, generated blocks, and running the compared variants as resumable sweeps.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fedsim.analysis import RunData, RunSet, load_sweep
from fedsim.config import load_scenario, scenario_from_dict, scenario_to_dict
from fedsim.errors import InputError
from fedsim.sweep import run_sweep


def rel_path(path: Path, root: Path) -> str:
    """Return ``path`` relative to ``root`` when it lies inside it, else as given."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def git_commit(root: Path) -> str:
    """Return the checked-out commit (``+ local changes`` if the tree is dirty), if any."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown commit"
    if head.returncode != 0:
        return "unknown commit"
    return "commit " + head.stdout.strip() + (" + local changes" if dirty else "")


def replace_block(doc: Path, begin: str, end: str, block: str, title: str | None = None) -> None:
    """Replace the text between a doc's ``begin`` and ``end`` marker lines with ``block``.

    With ``title``, a missing doc is created holding only the title and the markers.
    """
    if title is not None and not doc.is_file():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(f"# {title}\n\n{begin}\n{end}\n")
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: no generated block (lines {begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n\n{block}\n{end}{tail}")


@dataclass(frozen=True)
class Variant:
    """One configuration a doc compares: its scenario, overrides and sweep folder name."""

    label: str
    scenario: Path
    sets: tuple[str, ...]
    folder: str


def check_fresh(runs: Sequence[RunData], scenario: Path, sets: Sequence[str], folder: Path) -> None:
    """Refuse resumed runs made from another version of the scenario file.

    :func:`fedsim.sweep.run_sweep` reuses a complete run folder; after an edit of the
    scenario those runs would be stale. ``sets`` are the runs' overrides except the seed
    (a run's grid values are added).
    """
    root = Path(__file__).resolve().parents[1]
    for run in runs:
        extra = [*sets, *(f"{k}={v}" for k, v in run.params.items()), f"seed={run.seed}"]
        want = scenario_to_dict(load_scenario(scenario, extra))
        if _resolved(run.meta.get("scenario")) != want:
            raise SystemExit(
                f"{run.run_dir}: made from another version of {rel_path(scenario, root)}; "
                f"delete {folder} and run again"
            )


def generated_by(command: str) -> list[str]:
    """Return a generated block's first lines: the date and the command that made it."""
    return [f"Generated on {dt.date.today().isoformat()} by", "", "```bash", command, "```", ""]


def _resolved(stored: object) -> object:
    """Return a run's stored scenario as this version of fedsim resolves it.

    A field added to the scenario schema since the run (with its default) is then not a
    difference; a stored scenario this version cannot read is returned as it is.
    """
    if not isinstance(stored, dict):
        return stored
    try:
        return scenario_to_dict(scenario_from_dict(stored, "run.json: scenario"))
    except InputError:
        return stored


def run_variants(
    variants: Sequence[Variant], out: Path, seeds: int, key: str, parallel: int = 2,
    prepare: Callable[[RunData], None] | None = None,
) -> RunSet:  # fmt: skip
    """Run every variant on the same seeds, one resumable sweep folder each; return the runs.

    The returned set's grid key is ``key`` (a run's value: its variant's label); runs of one
    variant are its seeds, named ``<folder>/seed=N`` (unique across the sweeps).
    ``prepare`` is applied to every run read back.
    """

    def one(v: Variant) -> list[RunData]:
        folder = out / v.folder
        run_sweep(v.scenario, {}, seeds, folder, parallel=1, extra_sets=list(v.sets))
        runs = load_sweep(folder).runs
        check_fresh(runs, v.scenario, v.sets, folder)
        for r in runs:
            r.params = {key: v.label}
            r.run_id = f"{v.folder}/{r.run_id}"
            if prepare is not None:
                prepare(r)
        return runs

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = list(pool.map(one, variants))
    return RunSet(runs=[r for runs in results for r in runs], grid_keys=[key])
