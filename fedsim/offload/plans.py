"""Offloading plans: train locally, hand it all to a trusted edge, or split at a layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PlanKind = Literal["local", "full", "split"]


@dataclass(frozen=True)
class Plan:
    """An offloading plan.

    Attributes
    ----------
    kind : str
        ``"local"``: the device trains. ``"full"``: the device ships its training data to a
        trusted edge (the first time), the edge trains for it. ``"split"``: per batch the
        device runs the first ``k`` layers, the edge the rest (activations up, their
        gradients down).
    k : int
        The split point: how many of the model's executed layers stay on the device
        (``split`` only; ``0 < k < number of layers``).
    """

    kind: PlanKind = "local"
    k: int = 0

    @property
    def label(self) -> str:
        """Return the plan as written in results: ``local``, ``full`` or ``split(k)``."""
        return f"split({self.k})" if self.kind == "split" else self.kind


LOCAL = Plan("local")
FULL = Plan("full")


def split_at(k: int) -> Plan:
    """Return the plan that keeps the first ``k`` layers on the device."""
    if k <= 0:
        raise ValueError(f"a split point must be a positive layer count, got {k}")
    return Plan("split", k)
