"""The asynchronous driver: slots, dispatches, device processes, servers and version rows.

At most M devices train at a time. A free slot takes an idle on-line device at once; the
device downloads the current model of its server (the cloud, through its edge's copy;
or its edge under ``rounds.edges``), runs the same device process as a synchronous round
(local, full or split plans, shared links, drop-outs), and its update travels to the
server, which applies it (``async_servers.py``). Virtual time alone decides every step's
order; the runtime is handed each training when it is dispatched and each server step
when it is applied, and is never waited for except to read an evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import simpy

from fedsim.checkpoint import LoopState
from fedsim.config import AsyncRoundsSpec
from fedsim.config_rounds import ServerRuleSpec
from fedsim.runtime.base import CLOUD
from fedsim.seeding import Purpose, stream
from fedsim.sim import async_resume
from fedsim.sim.async_backhaul import Backhaul
from fedsim.sim.async_rows import Discard, VersionRows
from fedsim.sim.async_selection import Selector, build_selection
from fedsim.sim.async_servers import Update, VirtualServer
from fedsim.sim.device import device_process
from fedsim.sim.records import DeviceOutcome, Status
from fedsim.sim.sharing import SharedResource
from fedsim.sim.sync_round import _drop_at

if TYPE_CHECKING:
    from fedsim.sim.simulation import Simulation, SimulationResult

#: Virtual seconds between two looks for an idle on-line device when none was found.
POLL_S = 10.0


class AsyncDriver:
    """Runs a simulation's asynchronous protocol until a stop rule holds.

    Parameters
    ----------
    sim : Simulation
        The simulation (clock, planner, network, runtime, sink).
    stop_now : callable or None
        Asked after every global version: True finishes the rows, checkpoints and raises
        ``KeyboardInterrupt``.
    checkpoint, checkpoint_due : callable or None
        Write a checkpoint; whether the version row just written gets one.
    resume : (int, dict) or None
        The checkpoint's version row and models: the clock is replayed without learning
        up to that row, where the models take their places (``async_resume.py``).
    """

    def __init__(
        self,
        sim: Simulation,
        stop_now: Callable[[], bool] | None = None,
        checkpoint: Callable[[LoopState], None] | None = None,
        checkpoint_due: Callable[[int], bool] | None = None,
        resume: tuple[int, dict[str, Any]] | None = None,
    ) -> None:
        rounds = sim.scenario.rounds
        assert isinstance(rounds, AsyncRoundsSpec)
        self.sim = sim
        self.spec = rounds
        self.env = sim.env
        self.stop_now = stop_now
        self.checkpoint = checkpoint
        self.checkpoint_due = checkpoint_due
        # a resume replays the clock without learning up to the checkpoint's version row
        self.resume = resume
        self.rows = VersionRows(sim, sim.sink if resume is None else Discard())
        self.runtime = sim.runtime if resume is None else None
        net = sim.network
        pop = sim.population
        num_params = sim.inputs.payloads.upload_values
        self.selector = Selector(
            build_selection(rounds.selection, "scenario"), pop.num_devices, sim.availability
        )
        edge_rule = rounds.edges

        def server(
            s: int, rule: ServerRuleSpec, compute: SharedResource, flops: float
        ) -> VirtualServer:
            return VirtualServer(
                self.env, s, rule, rounds.max_staleness, compute, flops, num_params,
                self._stale, self._applied, self._handled,
            )  # fmt: skip

        self.cloud = server(CLOUD, rounds.server, net.cloud_compute, net.cloud_flops_per_s)
        self.edges = (
            [
                server(e, edge_rule, net.edge_compute[e], net.edge_flops_per_s[e])
                for e in range(pop.num_edges)
            ]
            if edge_rule is not None
            else []
        )
        self.backhaul = Backhaul(
            self.env, sim.planner, net, pop.num_edges, self._model(CLOUD), self._count_bytes
        )
        self.free = rounds.concurrency
        self.next_key = 0
        self.flights: dict[int, Update] = {}  # dispatch -> device update not yet arrived
        self.out: dict[int, DeviceOutcome] = {}
        self.polling = False
        self.excluded = 0
        self.halt = self.env.event()
        detection = rounds.failure_detection
        self.detect_s = detection.timeout_s if detection.kind == "timeout" else 0.0

    # -- the runtime, when there is one ------------------------------------------------------

    def _model(self, server: int) -> Any:
        return self.runtime.server_model(server) if self.runtime is not None else None

    def _discard(self, u: Update) -> None:
        if self.runtime is not None and u.handle is not None:
            self.runtime.discard([u.handle])

    # -- dispatch --------------------------------------------------------------------------

    def _fill(self) -> None:
        """Give every free slot a device, now."""
        while self.free > 0 and not self.halt.triggered:
            rng = stream(self.sim.scenario.seed, Purpose.SELECT, self.next_key)
            d = self.selector.choose(self.env.now, rng)
            if d is None:
                if not self.polling:
                    self.polling = True
                    self.env.timeout(POLL_S).callbacks.append(self._poll)
                return
            self.free -= 1
            self._dispatch(d)

    def _poll(self, _: simpy.Event) -> None:
        self.polling = False
        self._fill()

    def _dispatch(self, d: int) -> None:
        env, sim = self.env, self.sim
        key, self.next_key = self.next_key, self.next_key + 1
        edge = int(sim.population.edge_of[d])
        self.selector.busy[d] = True
        fetched: simpy.Event | None = None
        fetch_s = 0.0
        if self.edges:  # the device downloads its edge's model
            server, base_version = edge, self.edges[edge].version
        else:  # the cloud's model, through its edge's copy
            server, base_version = CLOUD, self.cloud.version
            fetched, fetch_s = self.backhaul.fetch(edge, base_version)
        plan = sim.planner.plan_one(d, key, fetch_s, env.now)
        u = Update(server, base_version, self._model(server), env.now, edge, key, d, plan)
        if plan.oom:  # it cannot train here, ever: excluded from selection, slot free again
            o = DeviceOutcome(plan, Status.OOM, env.now, env.now, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
            self.rows.window.outcomes.append(o)
            self.rows.update(u, "oom", self.env.now)
            self.free += 1
            self.excluded += 1
            if self.excluded == sim.population.num_devices:
                self._stop("no_devices")
            return
        finish = plan.finish_s(env.now)
        deadline = self.spec.deadline_s
        late = finish > plan.offline_at_s or (deadline is not None and finish > env.now + deadline)
        if self.runtime is not None and not late:
            u.handle = self.runtime.train_from([(d, key, u.base)])[0]
        self.flights[key] = u
        proc = env.process(
            device_process(
                env, plan, sim.network, fetched, lambda _: self._reported(u),
                lambda: self._finished(u), self.out, self.detect_s,
            )
        )  # fmt: skip
        if math.isfinite(plan.offline_at_s):
            _drop_at(env, proc, plan.offline_at_s)
        if deadline is not None:
            env.timeout(deadline).callbacks.append(
                lambda _: proc.interrupt("close") if proc.is_alive else None
            )

    def _count_bytes(self, up: int, down: int) -> None:
        self.rows.window.backhaul[0] += up
        self.rows.window.backhaul[1] += down

    # -- a device's end ----------------------------------------------------------------------

    def _reported(self, u: Update) -> None:
        """Send a reported update to its edge, or on through the backhaul to the cloud."""
        if self.edges:
            self._arrive(self.edges[u.edge_id], u)
        else:
            self.backhaul.relay(u, lambda: self._arrive(self.cloud, u))

    def _arrive(self, server: VirtualServer, u: Update) -> None:
        """Hand a device's update to its server (it is in flight until then)."""
        del self.flights[u.key]  # type: ignore[arg-type]
        server.arrive(u)

    def _finished(self, u: Update) -> None:
        """Record a device the server knows is done (a drop-out or time-out frees its slot)."""
        d = u.device_id
        assert d is not None
        o = self.out.pop(d)
        u.outcome = o
        self.selector.busy[d] = False
        if o.status is Status.COMPLETED:
            return  # its row and its slot wait until the server has handled the update
        self._count(u)
        self.flights.pop(u.key, None)  # type: ignore[arg-type]
        self._discard(u)
        self.rows.update(u, "dropped" if o.status is Status.DROPPED else "timed_out", self.env.now)
        self.free += 1
        self._fill()

    def _count(self, u: Update) -> None:
        """Put a device's dispatch into the current version's window (its device row)."""
        if u.outcome is not None and not u.counted:
            u.counted = True
            self.rows.window.outcomes.append(u.outcome)

    def _handled(self, u: Update) -> None:
        """Free the slot of a device whose update a server has handled; fill it."""
        self._count(u)  # buffered
        if u.device_id is not None:
            self.free += 1
            self._fill()

    # -- servers -----------------------------------------------------------------------------

    def _stale(self, u: Update) -> None:
        if u.outcome is not None:
            u.outcome.status = Status.DISCARDED
        self._count(u)
        self._discard(u)
        self.rows.update(u, "stale", self.env.now)

    def _applied(self, server: VirtualServer, step: list[Update]) -> None:
        """Tell the runtime a server applied ``step``; record it; forward or close a version."""
        if self.runtime is not None:
            items = [(u.handle, u.base, u.weight) for u in step]
            self.runtime.apply(server.server, server.rule.kind, items)
        for u in step:
            self.rows.update(u, "applied", self.env.now, server.version)
            self._count(u)
            if u.outcome is not None:
                self.rows.window.applied.append(u.outcome)
        if server.server != CLOUD:  # an edge version: forwarded to the cloud
            model = self._model(server.server)
            self.backhaul.forward(server.server, server.version, model, self.cloud.arrive)
            return
        self._version_row()
        for e in sorted({u.edge_id for u in step if u.device_id is None}):
            self._reply(e)

    def _reply(self, e: int) -> None:
        """Send the cloud's new model to edge ``e`` (after applying the edge's forward)."""

        def arrived(model: Any) -> None:
            if self.runtime is not None:
                self.runtime.receive(e, model)
            self.edges[e].version += 1

        self.backhaul.reply(e, self.cloud.version, self._model(CLOUD), arrived)

    # -- a global version ------------------------------------------------------------------

    def _version_row(self) -> None:
        """Write the new global version's row; evaluate; checkpoint; check the stop rules."""
        sim, now, version = self.sim, self.env.now, self.cloud.version
        edge_s = sum(e.busy_s for e in self.edges)
        for e in self.edges:
            e.busy_s = 0.0
        cloud_s, self.cloud.busy_s = self.cloud.busy_s, 0.0
        stop = sim.scenario.stop
        last = self.rows.done + 1 >= stop.max_rounds
        row, due = self.rows.close(version, now, (edge_s, cloud_s), last)
        if self.resume is not None:  # replaying rows already written
            if self.rows.done == self.resume[0]:
                self._resumed()
            return
        values = None
        if self.runtime is not None and due:
            ua_ids = range(sim.population.num_devices) if sim.scenario.evaluation.ua else ()
            values = self.runtime.submit_evaluation(ua_ids)
            self.rows.evaluated_version = version
        self.rows.add(row, values)
        if values is not None and stop.needs_values:
            self.rows.flush()  # fills the row's accuracy and UA columns
            reached = stop.reached(row)
            if reached is not None:
                self._stop(reached)
        if last:
            self._stop("max_rounds")
            return
        stopping = self.stop_now is not None and self.stop_now()
        due = self.checkpoint_due is not None and self.checkpoint_due(self.rows.done - 1)
        if self.checkpoint is not None and (due or stopping):
            self.rows.flush()
            self.checkpoint(LoopState(self.rows.done, version, self.rows.evaluated_version))
        if stopping:
            self._stop("interrupted")

    def _stop(self, why: str) -> None:
        if not self.halt.triggered:
            self.sim.result.stopped_by = why
            self.halt.succeed()
            self.cloud.halted = True
            for e in self.edges:
                e.halted = True

    # -- checkpoints (async_resume.py) -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return the models the protocol's state refers to (for a checkpoint)."""
        assert self.runtime is not None
        return async_resume.state(self, self.runtime)

    def _resumed(self) -> None:
        """Switch a replay to the real run: the checkpoint's models go where they were."""
        assert self.resume is not None
        _, models = self.resume
        self.resume, self.rows.sink = None, self.sim.sink
        if self.sim.runtime is not None:
            async_resume.restore(self, self.sim.runtime, models)
            self.runtime = self.sim.runtime

    # -- the run -----------------------------------------------------------------------------

    def run(self, loop: LoopState) -> SimulationResult:
        """Run from the start until a stop rule holds; return how it ended."""
        stop = self.sim.scenario.stop
        if stop.max_virtual_s is not None:
            self.env.timeout(stop.max_virtual_s - self.env.now).callbacks.append(
                lambda _: self._stop("max_virtual_s")
            )
        self._fill()
        try:
            self.env.run(until=self.halt)
        except RuntimeError as exc:  # SimPy: nothing left to happen, no device can report
            if "No scheduled events left" not in str(exc):
                raise
            self.sim.result.stopped_by = "no_updates"
        self.rows.flush()
        self._close_open()
        self.rows.tail()
        loop.version = self.cloud.version
        if self.sim.result.stopped_by == "interrupted":
            raise KeyboardInterrupt
        return self.sim.result

    def _close_open(self) -> None:
        """Write the fates of the updates the run ended with (in flight, queued, buffered)."""
        for key in sorted(self.flights):
            self._count(self.flights[key])  # reported, on the backhaul
            self.rows.update(self.flights[key], "in_flight", self.env.now)
        for server in [self.cloud, *self.edges]:
            for u in server.queue:
                self._count(u)
                self.rows.update(u, "queued", self.env.now)
            for u in server.buffer:
                self.rows.update(u, "buffered", self.env.now)
