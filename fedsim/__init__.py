"""fedsim: an actor-based, asynchronous simulator of FL on cloud-edge-device systems."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fedsim.errors import InputError

try:
    __version__ = version("fedsim")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["InputError", "RunResult", "__version__", "check", "load_scenario", "run"]


def __getattr__(name: str) -> Any:
    """Import the API lazily, so that ``fedsim.config`` stays light to import."""
    if name in ("RunResult", "check", "load_scenario", "run"):
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
