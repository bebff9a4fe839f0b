"""The private values devices keep in their host between rounds (MTFL's patches).

A device's training leaves its private values pending until the runtime says what became
of the update: used (aggregated or applied) — they become the device's own, the start of
its next training and its user model's patch — or discarded (late, stale, dropped) — they
are forgotten, as if that training had not happened. The same rule on every runtime keeps
results independent of which trainings a runtime ran (the inline runtime never trains an
update virtual time discarded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fedsim.algorithms.base import State


class PrivateStore:
    """Per device: its committed private values; per training: the pending ones."""

    def __init__(self) -> None:
        self.own: dict[int, State] = {}
        self._pending: dict[tuple[int, int], State] = {}

    def patched(self, device_id: int, base: State) -> State:
        """Return ``base`` with the device's private values in place (``base`` if none)."""
        own = self.own.get(device_id)
        return base if own is None else {**base, **own}

    def record(self, device_id: int, key: int, private: State) -> None:
        """Keep a training's private values until its update's fate is known."""
        if private:
            self._pending[(device_id, key)] = private

    def resolve(self, used: Iterable[tuple[int, int]], dropped: Iterable[tuple[int, int]]) -> None:
        """Make used trainings' private values the devices' own; forget dropped ones."""
        for job in used:
            private = self._pending.pop(job, None)
            if private is not None:
                self.own[job[0]] = private
        for job in dropped:
            self._pending.pop(job, None)

    def snapshot(self) -> dict[str, State]:
        """Return the committed values by device (a checkpoint; string keys)."""
        return {str(d): v for d, v in sorted(self.own.items())}

    def restore(self, values: Mapping[str, State]) -> None:
        """Set the committed values (a resume); nothing is pending."""
        self.own = {int(d): dict(v) for d, v in values.items()}
        self._pending = {}
