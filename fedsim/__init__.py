"""fedsim: an actor-based, asynchronous simulator of FL on cloud-edge-device systems."""

from __future__ import annotations

from typing import Any

from fedsim.errors import InputError

__all__ = ["InputError", "RunResult", "check", "load_scenario", "run"]


def __getattr__(name: str) -> Any:
    """Import the API lazily, so that ``fedsim.config`` stays light to import."""
    if name in ("RunResult", "check", "load_scenario", "run"):
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
