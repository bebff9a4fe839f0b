"""Shared test helpers (importable as `helpers`: pyproject puts tests/ on the path)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Return ``$FEDSIM_DATA`` or the ``shared/data`` folder beside the checkout."""
    env = os.environ.get("FEDSIM_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


class Crash(Exception):
    """Raised by :func:`crash_after` to cut a run short, as a crash would."""


def crash_after(round_index: int):  # type: ignore[no-untyped-def]
    """Return an ``on_round`` callback that raises :class:`Crash` after that round's row."""

    def on_round(row: dict) -> None:
        if row["round"] == round_index:
            raise Crash

    return on_round


def cut_and_resume(scenario, out: Path, round_index: int):  # type: ignore[no-untyped-def]
    """Run ``scenario`` into ``out`` until a crash after ``round_index``; resume it."""
    import pytest

    from fedsim.api import resume, run

    with pytest.raises(Crash):
        run(scenario, out, on_round=crash_after(round_index))
    return resume(out)


def same_files(a: Path, b: Path, names) -> None:  # type: ignore[no-untyped-def]
    """Assert that the files ``names`` of run folders ``a`` and ``b`` are byte-identical."""
    import filecmp

    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def run_on_ray(scenario, out: Path):  # type: ignore[no-untyped-def]
    """Run ``scenario`` (a Ray runtime) into ``out``, shutting Ray down afterwards."""
    import ray

    from fedsim.api import run

    try:
        return run(scenario, out)
    finally:
        if ray.is_initialized():
            ray.shutdown()
