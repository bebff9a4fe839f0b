"""The synchronous driver: rounds until a stop rule, evaluations, checkpoints, stop requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedsim.checkpoint import LoopState
from fedsim.runtime.base import Evaluation
from fedsim.sim.rows import ACCURACY_COLUMNS, evaluation_columns

if TYPE_CHECKING:
    from fedsim.sim.simulation import Simulation, SimulationResult


@dataclass
class _Deferred:
    """A round whose evaluation is read after the next round's work was submitted."""

    version: int
    row: dict[str, object]
    values: Callable[[], Evaluation]
    wall0: float


class SyncDriver:
    """Runs a simulation's synchronous rounds.

    When no stop rule needs the evaluation (no ``target_accuracy``, no ``target_ua``), a
    round's evaluation is read only after the next round's work has been submitted, so a
    runtime with actors evaluates while devices train; rows and progress then follow one
    round late. A deferred round's wall time runs until the next round starts. A round
    about to be checkpointed is never deferred.

    Parameters
    ----------
    sim : Simulation
        The simulation (clock, planner, runtime, sink).
    checkpoint : callable or None
        Writes a checkpoint at a round boundary (None: never).
    checkpoint_due : callable or None
        Whether the boundary after a round gets one.
    stop_now : callable or None
        Asked after every round: True finishes that round's row, checkpoints and raises
        ``KeyboardInterrupt``.
    """

    def __init__(
        self,
        sim: Simulation,
        checkpoint: Callable[[LoopState], None] | None,
        checkpoint_due: Callable[[int], bool] | None,
        stop_now: Callable[[], bool] | None,
    ) -> None:
        self.sim = sim
        self.checkpoint = checkpoint
        self.checkpoint_due = checkpoint_due
        self.stop_now = stop_now

    def _fill(self, version: int, row: dict[str, object], ev: Evaluation) -> float | None:
        """Write an evaluation into the row's accuracy columns and the UA rows."""
        ua = evaluation_columns(row, ev, self.sim.inputs.noisy_devices)
        if ua:
            self.sim.sink.add_ua(ua)
        return ev.accuracy

    def _finish_row(self, row: dict[str, object], wall_s: float) -> None:
        sim = self.sim
        sim.sink.add_round(row)
        sim.result.wall_s_per_round.append(wall_s)
        if sim.on_round is not None:
            sim.on_round(row)

    def _finish_deferred(self, d: _Deferred, wall_end: float) -> None:
        self._fill(d.version, d.row, d.values())
        self._finish_row(d.row, wall_end - d.wall0)

    def run(self, loop: LoopState) -> SimulationResult:
        """Run rounds from ``loop`` until a stop rule holds; return how it ended."""
        sim = self.sim
        stop = sim.scenario.stop
        every = sim.scenario.evaluation.every
        deferred: _Deferred | None = None
        for round_index in range(loop.next_round, stop.max_rounds):
            wall0 = time.perf_counter()
            row, synced = sim.run_one(round_index, loop.version)
            if deferred is not None:
                self._finish_deferred(deferred, wall0)
                deferred = None
            loop.version += int(synced)
            last = round_index + 1 == stop.max_rounds or (
                stop.max_virtual_s is not None and sim.env.now >= stop.max_virtual_s
            )
            save = (
                self.checkpoint is not None
                and self.checkpoint_due is not None
                and not last
                and self.checkpoint_due(round_index)
            )
            version = loop.version
            due = synced and (version % every == 0 or last) and version != loop.evaluated_version
            row.update(dict.fromkeys(ACCURACY_COLUMNS))
            if due and sim.runtime is not None:
                ua_ids = range(sim.population.num_devices) if sim.scenario.evaluation.ua else ()
                values = sim.runtime.submit_evaluation(ua_ids)
                loop.evaluated_version = version
                if not stop.needs_values and not last and not save:
                    deferred = _Deferred(version, row, values, wall0)
                else:
                    self._fill(version, row, values())
            if deferred is None:
                self._finish_row(row, time.perf_counter() - wall0)
            reached = None if deferred is not None else stop.reached(row)
            if reached is not None:
                sim.result.stopped_by = reached
                break
            if stop.max_virtual_s is not None and sim.env.now >= stop.max_virtual_s:
                sim.result.stopped_by = "max_virtual_s"
                break
            loop.next_round = round_index + 1
            stopping = self.stop_now is not None and self.stop_now()
            if stopping and deferred is not None:  # its row goes before the checkpoint
                self._finish_deferred(deferred, time.perf_counter())
                deferred = None
            if self.checkpoint is not None and (save or (stopping and not last)):
                self.checkpoint(loop)
            if stopping:
                raise KeyboardInterrupt
        else:
            sim.result.stopped_by = "max_rounds"
        return sim.result
