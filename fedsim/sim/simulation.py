"""The simulation: the clock, one round (select, dispatch, collect, aggregate), its state.

``sync_driver.py`` runs the rounds one after another.
"""

from __future__ import annotations

import dataclasses
import gc
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from fedsim.checkpoint import Checkpoint, LoopState
from fedsim.config import AsyncRoundsSpec, RoundsSpec, Scenario
from fedsim.offload import HistoryEntry
from fedsim.runtime.base import Runtime
from fedsim.sim.async_driver import AsyncDriver
from fedsim.sim.availability import Availability
from fedsim.sim.inputs import Payloads, SimulationInputs
from fedsim.sim.network import Network
from fedsim.sim.offloading import HISTORY_ROUNDS
from fedsim.sim.planning import RoundPlanner
from fedsim.sim.population import Population
from fedsim.sim.rows import (
    DEVICE_COLUMNS,
    ROUND_COLUMNS,
    UA_COLUMNS,
    MemorySink,
    RowSink,
    device_rows,
    round_row,
)
from fedsim.sim.servers import fetch_models, serve
from fedsim.sim.sync_driver import SyncDriver
from fedsim.sim.sync_round import DeviceOutcome, DevicePlan, RoundTiming, run_round

__all__ = [
    "DEVICE_COLUMNS", "ROUND_COLUMNS", "UA_COLUMNS", "Payloads", "Simulation",
    "SimulationInputs", "SimulationResult",
]  # fmt: skip


@dataclass
class SimulationResult:
    """How the run ended (its rows went to the sink as the rounds finished)."""

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
    sink : RowSink, optional
        Where the rows go as each round finishes (default: kept in memory).
    on_round : callable, optional
        Called after every round with the round's row (for progress display).
    """

    def __init__(
        self,
        scenario: Scenario,
        inputs: SimulationInputs,
        runtime: Runtime | None,
        on_round: Callable[[dict[str, object]], None] | None = None,
        sink: RowSink | None = None,
    ) -> None:
        self.scenario = scenario
        self.inputs = inputs
        self.runtime = runtime
        self.on_round = on_round
        self.sink: RowSink = sink if sink is not None else MemorySink()
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
        self.async_state: Callable[[], dict[str, Any]] | None = None

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
        edges = self.population.edge_of[selected].tolist()
        fetching = set(edges) & self._stale
        relays = self.inputs.algorithm.edge_relays  # one payload per selected device (MOCHA)
        fetch = self.planner.edge_fetch(
            fetching, round_index, dict(Counter(edges)) if relays else None
        )
        self._stale -= fetching
        plans = self.planner.plans(selected, round_index, start, fetch)
        handles = self._submit(round_index, plans)
        wanted = min(self.wanted(), len(plans))
        rounds = self.scenario.rounds
        assert isinstance(rounds, RoundsSpec), "a synchronous round"
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
        uploads = (
            self.planner.edge_uploads(self._pending, round_index, counts if relays else None)
            if sync
            else {}
        )
        servers = env.process(
            serve(env, self.network, counts, uploads, self.inputs.payloads.upload_values)
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
        self.sink.add_devices(device_rows(round_index, timing.outcomes, self.population, energies))
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

    # -- checkpoints -----------------------------------------------------------------------

    def snapshot(
        self, loop: LoopState, totals: dict[str, Any], table_bytes: dict[str, int]
    ) -> Checkpoint:
        """Return the run's state at this round boundary (the models are the runtime's).

        ``totals`` and ``table_bytes``: the summary so far and the tables' sizes, which the
        run folder keeps.
        """
        offload = self.planner.offload
        return Checkpoint(
            loop=dataclasses.replace(loop),
            now_s=float(self.env.now),
            pending_edges=sorted(self._pending),
            stale_edges=sorted(self._stale),
            data_at_edge=sorted(offload.data_at_edge),
            history={
                str(d): [list(dataclasses.astuple(e)) for e in h]
                for d, h in sorted(offload.history.items())
            },  # fmt: skip
            totals=totals,
            table_bytes=table_bytes,
            wall_s_per_round=list(self.result.wall_s_per_round),
        )

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from a checkpoint: the clock at its time, the servers' bookkeeping."""
        self.env = simpy.Environment(initial_time=ckpt.now_s)
        self.network = Network(
            self.env, self.scenario, self.inputs.profiles, self.population, self.inputs.bandwidth
        )
        self._pending, self._stale = set(ckpt.pending_edges), set(ckpt.stale_edges)
        offload = self.planner.offload
        offload.data_at_edge = set(ckpt.data_at_edge)
        for d, entries in ckpt.history.items():
            offload.history[int(d)] = deque(
                (HistoryEntry(*e) for e in entries), maxlen=HISTORY_ROUNDS
            )
        self.result.wall_s_per_round = list(ckpt.wall_s_per_round)

    # -- the run -------------------------------------------------------------------------

    def run(
        self,
        loop: LoopState | None = None,
        checkpoint: Callable[[LoopState], None] | None = None,
        checkpoint_due: Callable[[int], bool] | None = None,
        stop_now: Callable[[], bool] | None = None,
        resume_models: dict[str, Any] | None = None,
    ) -> SimulationResult:
        """Run rounds until a stop rule holds; return how it ended.

        An asynchronous run resumes by replaying its clock (without learning) to the
        checkpoint's version row, where ``resume_models`` (the checkpoint's models) take
        over; :attr:`async_state` then gives the models a checkpoint must hold.

        ``loop``: where to start (a resumed run, after :meth:`restore`). ``checkpoint`` is
        called at the round boundaries ``checkpoint_due(round_index)`` asks for, after the
        round's row went to the sink. ``stop_now`` is asked after every round: True finishes
        that round's row, checkpoints and raises ``KeyboardInterrupt``.

        While the rounds run, the objects made before them (libraries, data, models) are
        moved out of the cyclic garbage collector's sight (``gc.freeze``, undone at the
        end): its periodic full passes then scan only what the rounds allocate, instead
        of the ~10^5 objects torch and pandas create (~0.1 s per pass).
        """
        gc.freeze()
        try:
            if isinstance(self.scenario.rounds, AsyncRoundsSpec):
                loop = loop or LoopState()
                at = (loop.next_round, resume_models) if resume_models is not None else None
                async_driver = AsyncDriver(self, stop_now, checkpoint, checkpoint_due, at)
                self.async_state = async_driver.state
                return async_driver.run(loop)
            driver = SyncDriver(self, checkpoint, checkpoint_due, stop_now)
            return driver.run(loop or LoopState())
        finally:
            gc.unfreeze()
