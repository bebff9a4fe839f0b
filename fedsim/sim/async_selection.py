"""Which idle, on-line device takes a free slot of an asynchronous run.

``uniform`` (built in) draws uniformly; any ``package.module:Class`` with a ``choose``
method (:class:`SelectionRule`) may replace it. Each choice gets its own keyed stream
(seed, selection, dispatch number), so choices never depend on the order of draws.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedsim.errors import InputError
from fedsim.registry import resolve
from fedsim.sim.availability import Availability

#: Random draws tried before the uniform rule lists every idle on-line device.
TRIES = 64
#: Built-in selection rules by name.
BUILTIN_SELECTIONS = {"uniform": "fedsim.sim.async_selection:Uniform"}


class SelectionRule(Protocol):
    """A pluggable rule: pick one device among ``candidates`` (idle, on line, sorted ids)."""

    def choose(self, candidates: np.ndarray, now_s: float, rng: np.random.Generator) -> int:
        """Return one of ``candidates``."""
        ...


class Uniform:
    """Every idle on-line device equally likely."""

    def choose(self, candidates: np.ndarray, now_s: float, rng: np.random.Generator) -> int:
        """Return a uniformly drawn candidate."""
        return int(candidates[rng.integers(candidates.shape[0])])


def build_selection(name: str, source: str) -> SelectionRule:
    """Return the rule ``rounds.selection`` names (``uniform`` or ``module:Class``)."""
    try:
        cls = resolve(name, BUILTIN_SELECTIONS, "selection rule")
    except LookupError as exc:
        raise InputError(f"{source}: rounds.selection: {exc}") from None
    rule = cls()
    if not callable(getattr(rule, "choose", None)):
        raise InputError(f"{source}: rounds.selection: {name!r} has no choose() method")
    return rule


class Selector:
    """Chooses devices for free slots among those not busy, not excluded and on line.

    Parameters
    ----------
    rule : SelectionRule
        The rule; :class:`Uniform` takes a fast path (random draws, listing all candidates
        only when ``TRIES`` draws found none).
    num_devices : int
        Devices in the population.
    availability : Availability
        When each device is on line.
    """

    def __init__(self, rule: SelectionRule, num_devices: int, availability: Availability) -> None:
        self.rule = rule
        self.n = num_devices
        self.availability = availability
        self.busy = np.zeros(num_devices, dtype=bool)  # training now, or never able to

    def candidates(self, now_s: float) -> np.ndarray:
        """Return the idle on-line devices (sorted ids)."""
        idle = np.flatnonzero(~self.busy)
        return idle[self.availability.online_mask(idle, now_s)] if idle.size else idle

    def choose(self, now_s: float, rng: np.random.Generator) -> int | None:
        """Return a device for a free slot, or None when no device is idle and on line."""
        if isinstance(self.rule, Uniform):
            for _ in range(TRIES):
                d = int(rng.integers(self.n))
                if not self.busy[d] and self.availability.online_at(d, now_s):
                    return d
        found = self.candidates(now_s)
        if found.size == 0:
            return None
        d = int(self.rule.choose(found, now_s, rng))
        if d not in set(found.tolist()):
            raise InputError(f"rounds.selection: the rule chose device {d}, not a candidate")
        return d
