"""Shared test helpers (importable as `helpers`: pyproject puts tests/ on the path)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Return ``$FEDSIM_DATA`` or the ``shared/data`` folder beside the checkout."""
    env = os.environ.get("FEDSIM_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"
