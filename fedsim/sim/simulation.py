"""The driver: the SimPy clock, rounds, selection, and the calls into the runtime."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from fedsim.config import Scenario
from fedsim.offload import HistoryEntry
from fedsim.runtime.base import Evaluation, Runtime
from fedsim.sim.availability import Availability
from fedsim.sim.network import Network
from fedsim.sim.planning import Payloads, RoundPlanner, SimulationInputs
from fedsim.sim.population import Population
from fedsim.sim.rows import (
    ACCURACY_COLUMNS,
    DEVICE_COLUMNS,
    ROUND_COLUMNS,
    UA_COLUMNS,
    device_rows,
    round_row,
)
from fedsim.sim.servers import fetch_models, serve
from fedsim.sim.sync_round import DeviceOutcome, DevicePlan, RoundTiming, run_round

__all__ = [
    "DEVICE_COLUMNS", "ROUND_COLUMNS", "UA_COLUMNS", "Payloads", "Simulation",
    "SimulationInputs", "SimulationResult",
]  # fmt: skip


@dataclass
class SimulationResult:
    """Rows of the result tables, in the column order of the module constants."""

    rounds: list[tuple[object, ...]] = field(default_factory=list)
    device_rounds: list[tuple[object, ...]] = field(default_factory=list)
    device_ua: list[tuple[object, ...]] = field(default_factory=list)
    wall_s_per_round: list[float] = field(default_factory=list)
    stopped_by: str = ""


class Simulation:
    """Run a scenario's synchronous rounds on the virtual clock.

    Virtual durations depend on the scenario, the profiles, payload sizes and keyed
    draws, never on training results (DESIGN.md §2); the runtime gets work at the
    round's start and is read only at aggregation and evaluation.

    Parameters
    ----------
    scenario : Scenario
        The validated scenario.
    inputs : SimulationInputs
        Profiles, model description, algorithm, payload sizes, samples per device.
    runtime : Runtime or None
        Where training runs; None runs the systems model alone (``learning: false``).
    on_round : callable, optional
        Called after every round with the round's row (for progress display).
    """

    def __init__(
        self,
        scenario: Scenario,
        inputs: SimulationInputs,
        runtime: Runtime | None,
        on_round: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.inputs = inputs
        self.runtime = runtime
        self.on_round = on_round
        self.env = simpy.Environment()
        self.population = Population.from_topology(scenario.topology)
        trace = inputs.availability_trace
        self.availability = Availability(
            scenario.availability, scenario.seed, self.population.num_devices, trace=trace
        )
        self.planner = RoundPlanner(scenario, inputs, self.population, self.availability)
        self.network = Network(
            self.env, scenario, inputs.profiles, self.population, inputs.bandwidth
        )
        self._pending: set[int] = set()  # edges holding updates the cloud has not aggregated
        self._stale = set(range(self.population.num_edges))  # edges without the global model
        self.result = SimulationResult()

    def wanted(self) -> int:
        """Return K, the reports a round keeps."""
        return self.planner.wanted()

    def select(self, round_index: int) -> np.ndarray:
        """Return the devices selected for a round starting now (sorted ids)."""
        return self.planner.select(round_index, self.env.now)

    # -- one round -----------------------------------------------------------------------

    def _submit(self, round_index: int, plans: list[DevicePlan]) -> dict[int, object]:
        """Submit training for the devices virtual time has not already discarded."""
        if self.runtime is None:
            return {}
        deadline = self.scenario.rounds.deadline_s
        now = self.env.now
        by_edge: dict[int, list[int]] = {}
        for p in plans:
            if p.oom:
                continue  # cannot train here
            finish = p.finish_s(now)
            if finish > p.offline_at_s or (deadline is not None and finish > now + deadline):
                continue  # certainly dropped or late: never submitted
            by_edge.setdefault(p.edge_id, []).append(p.device_id)
        handles: dict[int, object] = {}
        for edge_id, ids in sorted(by_edge.items()):
            handles.update(zip(ids, self.runtime.train(edge_id, round_index, ids), strict=True))
        return handles

    def run_one(self, round_index: int, version: int) -> tuple[dict[str, object], bool]:
        """Run a round: select, dispatch, collect, aggregate. Returns its row and if synced."""
        env = self.env
        start = env.now
        selected = self.select(round_index)
        fetching = set(self.population.edge_of[selected].tolist()) & self._stale
        fetch = self.planner.edge_fetch(fetching, round_index)
        self._stale -= fetching
        plans = self.planner.plans(selected, round_index, start, fetch)
        handles = self._submit(round_index, plans)
        wanted = min(self.wanted(), len(plans))
        rounds = self.scenario.rounds
        detection = rounds.failure_detection
        detect_s = detection.timeout_s if detection.kind == "timeout" else 0.0
        fetched = fetch_models(self.network, fetch)
        proc = env.process(
            run_round(env, plans, wanted, rounds.deadline_s, self.network, fetched, detect_s)
        )
        env.run(until=proc)
        timing = proc.value
        assert isinstance(timing, RoundTiming)
        enough = len(timing.kept) >= math.ceil(rounds.min_report_fraction * wanted)
        used = timing.kept if enough else []  # too few reports: the round fails, nothing is used
        counts: dict[int, int] = {}
        for o in used:
            counts[o.plan.edge_id] = counts.get(o.plan.edge_id, 0) + 1
        self._pending |= set(counts)
        sync = (round_index + 1) % rounds.cloud_every == 0
        uploads = self.planner.edge_uploads(self._pending, round_index) if sync else {}
        servers = env.process(
            serve(env, self.network, counts, uploads, self.inputs.model.num_params)
        )
        env.run(until=servers)
        edge_s, cloud_s = servers.value  # type: ignore[misc]
        synced = bool(uploads)
        self._aggregate(used, handles, synced)
        if synced:
            self._pending.clear()
            self._stale = set(range(self.population.num_edges))
        backhaul = (
            sum(t.num_bytes for t in uploads.values()),
            sum(t.num_bytes for t in fetch.values()),
        )
        energies = [self.planner.energy(o) for o in timing.outcomes]
        row = round_row(
            round_index, version + int(synced), start, env.now, timing, (edge_s, cloud_s),
            backhaul, energies,
        )  # fmt: skip
        self.result.device_rounds.extend(
            device_rows(round_index, timing.outcomes, self.population, energies)
        )
        self._remember(round_index, timing.outcomes)
        return row, synced

    def _remember(self, round_index: int, outcomes: list[DeviceOutcome]) -> None:
        """Tell the offloading planner what devices did (data now at the edge; history)."""
        offload = self.planner.offload
        if offload.local_only and not offload.keep_history:
            return
        for o in outcomes:
            work = o.plan.work
            uploaded = (
                work is not None
                and work.data_bits > 0
                and (o.data_bytes_up == int(work.data_bits) // 8)
            )
            entry = HistoryEntry(round_index, o.plan_label, o.status.value, o.end_s - o.start_s)
            offload.record(o.plan.device_id, entry, uploaded)

    def _aggregate(
        self, used: list[DeviceOutcome], handles: dict[int, object], synced: bool
    ) -> None:
        """Aggregate the used updates per edge in device-id order; then the cloud.

        A synchronous round's aggregate is a weighted mean of the updates it kept; summing
        them in device-id order (DESIGN.md §2 says arrival order, which asynchronous rounds
        need) makes the new model a function of *which* updates were kept, not of when they
        arrived: offloading plans, contention and traces, which move arrival times, then
        leave learning bit-identical (floating-point sums depend on their order).
        """
        if self.runtime is None:
            return
        kept_ids = {o.plan.device_id for o in used}
        self.runtime.discard([h for d, h in sorted(handles.items()) if d not in kept_ids])
        per_edge: dict[int, list[object]] = {}
        for o in sorted(used, key=lambda o: o.plan.device_id):
            per_edge.setdefault(o.plan.edge_id, []).append(handles[o.plan.device_id])
        for edge_id, edge_handles in sorted(per_edge.items()):
            self.runtime.aggregate_edge(edge_id, edge_handles)
        if synced:
            self.runtime.sync_cloud()

    # -- the run -------------------------------------------------------------------------

    def _fill(self, version: int, row: dict[str, object], ev: Evaluation) -> float:
        """Write an evaluation into the row's accuracy columns and the UA rows."""
        row["accuracy"], row["loss"] = ev.accuracy, ev.loss
        q = ev.ua_quantiles()
        if q is not None:
            row["ua_mean"], row["ua_p10"], row["ua_p50"], row["ua_p90"] = q
            self.result.device_ua.extend((version, d, ev.ua[d]) for d in sorted(ev.ua))
        return ev.accuracy

    def _finish_row(self, row: dict[str, object], wall_s: float) -> None:
        self.result.rounds.append(tuple(row[c] for c in ROUND_COLUMNS))
        self.result.wall_s_per_round.append(wall_s)
        if self.on_round is not None:
            self.on_round(row)

    def run(self) -> SimulationResult:
        """Run rounds until a stop rule holds; return the result rows.

        While the rounds run, the objects made before them (libraries, data, models) are
        moved out of the cyclic garbage collector's sight (``gc.freeze``, undone at the
        end): its periodic full passes then scan only what the rounds allocate, instead
        of the ~10^5 objects torch and pandas create (~0.1 s per pass).
        """
        gc.freeze()
        try:
            return self._run_rounds()
        finally:
            gc.unfreeze()

    def _run_rounds(self) -> SimulationResult:
        """Run the rounds.

        When no stop rule needs the accuracy (no ``target_accuracy``), a round's evaluation
        is read only after the next round's work has been submitted, so a runtime with
        actors evaluates while devices train; rows and progress then follow one round late.
        A deferred round's wall time runs until the next round starts.
        """
        self.result = SimulationResult()
        stop = self.scenario.stop
        every = self.scenario.evaluation.every
        version = 0
        evaluated_version = -1
        pending: tuple[int, dict[str, object], Callable[[], Evaluation], float] | None = None
        for round_index in range(stop.max_rounds):
            wall0 = time.perf_counter()
            row, synced = self.run_one(round_index, version)
            if pending is not None:
                p_version, p_row, values, p_wall0 = pending
                self._fill(p_version, p_row, values())
                self._finish_row(p_row, wall0 - p_wall0)
                pending = None
            version += int(synced)
            last = round_index + 1 == stop.max_rounds or (
                stop.max_virtual_s is not None and self.env.now >= stop.max_virtual_s
            )
            due = synced and (version % every == 0 or last) and version != evaluated_version
            row.update(dict.fromkeys(ACCURACY_COLUMNS))
            accuracy = None
            if due and self.runtime is not None:
                ua_ids = range(self.population.num_devices) if self.scenario.evaluation.ua else ()
                values = self.runtime.submit_evaluation(ua_ids)
                evaluated_version = version
                if stop.target_accuracy is None and not last:
                    pending = (version, row, values, wall0)
                else:
                    accuracy = self._fill(version, row, values())
            if pending is None:
                self._finish_row(row, time.perf_counter() - wall0)
            target = stop.target_accuracy
            if target is not None and accuracy is not None and accuracy >= target:
                self.result.stopped_by = "target_accuracy"
                break
            if stop.max_virtual_s is not None and self.env.now >= stop.max_virtual_s:
                self.result.stopped_by = "max_virtual_s"
                break
        else:
            self.result.stopped_by = "max_rounds"
        return self.result
