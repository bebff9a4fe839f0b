"""Offloading: plans (local, full, split at a layer) and the policies that choose them."""

from __future__ import annotations

from pydantic import ValidationError

from fedsim.config import ComponentSpec, validation_problems
from fedsim.errors import InputError
from fedsim.offload.base import DeviceView, Estimate, HistoryEntry, OffloadPolicy
from fedsim.offload.plans import FULL, LOCAL, Plan, split_at
from fedsim.registry import resolve

__all__ = [
    "BUILTIN_POLICIES", "FULL", "LOCAL", "DeviceView", "Estimate", "HistoryEntry",
    "OffloadPolicy", "Plan", "build_policy", "split_at",
]  # fmt: skip

BUILTIN_POLICIES = {
    "local": "fedsim.offload.local:Local",
    "full": "fedsim.offload.full:Full",
    "split": "fedsim.offload.split:Split",
    "fastest": "fedsim.offload.fastest:Fastest",
    "deadline": "fedsim.offload.deadline:Deadline",
    "energy": "fedsim.offload.energy:Energy",
}


def build_policy(spec: ComponentSpec, field: str, source: str = "scenario") -> OffloadPolicy:
    """Resolve ``spec.use`` and validate ``spec.params`` against the policy's ``Params``.

    ``field`` is where the spec sits in the scenario (e.g. ``offload`` or
    ``topology.edges[0].devices[1].offload``), for messages.
    """
    try:
        cls = resolve(spec.use, BUILTIN_POLICIES, "offloading policy")
    except LookupError as exc:
        raise InputError(f"{source}: {field}.use: {exc}") from None
    if not issubclass(cls, OffloadPolicy):
        raise InputError(
            f"{source}: {field}.use: {spec.use!r} is not an fedsim OffloadPolicy "
            "(subclass fedsim.offload.OffloadPolicy)"
        )
    try:
        params = cls.Params.model_validate(dict(spec.params))
    except ValidationError as exc:
        lines = validation_problems(source, exc)
        raise InputError([line.replace(": ", f": {field}.params.", 1) for line in lines]) from None
    return cls(params)
