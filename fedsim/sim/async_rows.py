"""The rows of an asynchronous run: a ``rounds.csv`` row per global version, update rows.

A version row covers what happened since the previous version (the window): dispatches
that ended, device updates applied, backhaul bytes. Evaluations are read one evaluation
late (the next one is submitted first), unless a stop rule needs the accuracy at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedsim.runtime.base import CLOUD, Evaluation
from fedsim.sim.async_servers import Update
from fedsim.sim.records import DeviceOutcome, RoundTiming
from fedsim.sim.rows import (
    ACCURACY_COLUMNS,
    RowSink,
    device_rows,
    evaluation_columns,
    round_row,
)

if TYPE_CHECKING:
    from fedsim.sim.simulation import Simulation


class Window:
    """What happened since the last global version (the next rounds.csv row)."""

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self.outcomes: list[DeviceOutcome] = []
        self.applied: list[DeviceOutcome] = []
        self.backhaul = [0, 0]  # bytes up, down


class Discard:
    """A sink for the rows a resume replays (they are in the files already)."""

    def add_round(self, row: dict[str, object]) -> None:
        """Drop the row."""

    def add_devices(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Drop the rows."""

    def add_ua(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Drop the rows."""

    def add_updates(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Drop the rows."""


class VersionRows:
    """Writes an asynchronous run's rows; decides when the global model is evaluated.

    Parameters
    ----------
    sim : Simulation
        The simulation (scenario, planner, population, result, progress callback).
    sink : RowSink
        Where rows go (a :class:`Discard` while a resume replays).
    """

    def __init__(self, sim: Simulation, sink: RowSink) -> None:
        self.sim = sim
        self.sink = sink
        self.window = Window(sim.env.now)
        self.done = 0  # version rows closed
        self.pending: list[tuple[dict[str, object], Callable[[], Evaluation] | None]] = []
        self.next_eval_s = sim.scenario.evaluation.every_s or math.inf
        self.evaluated_version = -1
        self.wall0 = time.perf_counter()

    def update(self, u: Update, fate: str, now: float, version: int | None = None) -> None:
        """Write an update's row (``updates.csv``) once its fate is known."""
        server = "cloud" if u.server == CLOUD else "edge"
        applied = now if fate == "applied" else None
        arrival = u.arrival_s if math.isfinite(u.arrival_s) else None
        weighted = fate in ("applied", "buffered")
        self.sink.add_updates(
            [(
                u.key, "device" if u.device_id is not None else "edge", u.device_id, u.edge_id,
                server, u.base_version, u.dispatch_s, arrival,
                u.staleness if arrival is not None else None, u.weight if weighted else None,
                fate, version, applied,
            )]
        )  # fmt: skip

    def close(
        self, version: int, now: float, server_s: tuple[float, float], last: bool
    ) -> tuple[dict[str, object], bool]:
        """Close the window into version ``version``'s row (device rows written); return
        the row (no accuracy yet) and whether the global model is due for evaluation.

        ``server_s``: the edges' and the cloud's compute seconds spent applying.
        """  # noqa: D205
        sim, w = self.sim, self.window
        energies = [sim.planner.energy(o) for o in w.outcomes]
        timing = RoundTiming(w.start_s, now, w.outcomes, w.applied)
        row = round_row(
            self.done, version, w.start_s, now, timing, server_s,
            (w.backhaul[0], w.backhaul[1]), energies,
        )  # fmt: skip
        row.update(dict.fromkeys(ACCURACY_COLUMNS))
        self.sink.add_devices(device_rows(self.done, w.outcomes, sim.population, energies))
        self.window = Window(now)
        self.done += 1
        every = sim.scenario.evaluation
        due = version % every.every == 0 or last or now >= self.next_eval_s
        while self.next_eval_s <= now:
            self.next_eval_s += every.every_s or math.inf
        return row, due

    def add(self, row: dict[str, object], values: Callable[[], Evaluation] | None) -> None:
        """Queue a row; an evaluated one sends the rows before it (reading their values)."""
        if values is not None:
            self.flush()
        self.pending.append((row, values))

    def flush(self) -> None:
        """Write the pending rows in order, reading their evaluations."""
        sim = self.sim
        for row, values in self.pending:
            if values is not None:
                ua = evaluation_columns(row, values(), sim.inputs.noisy_devices)
                if ua:
                    self.sink.add_ua(ua)
            self.sink.add_round(row)
            now = time.perf_counter()
            sim.result.wall_s_per_round.append(now - self.wall0)
            self.wall0 = now
            if sim.on_round is not None:
                sim.on_round(row)
        self.pending = []

    def tail(self) -> None:
        """Write the device rows of dispatches that ended after the last version.

        Their ``round`` is the number of version rows (a row beyond the last).
        """
        w = self.window
        energies = [self.sim.planner.energy(o) for o in w.outcomes]
        self.sink.add_devices(device_rows(self.done, w.outcomes, self.sim.population, energies))
