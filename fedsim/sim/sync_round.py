"""One synchronous round's collection on the SimPy clock: the device processes and the close."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import simpy

from fedsim.sim.costs import BITS_PER_BYTE, Transfer
from fedsim.sim.records import DeviceOutcome, DevicePlan, RoundTiming, Status
from fedsim.sim.sharing import Flow, SharedResource

__all__ = ["DeviceOutcome", "DevicePlan", "Links", "RoundTiming", "Status", "run_round"]


class Links(Protocol):
    """Where a device's transfers run (:class:`fedsim.sim.network.Network`)."""

    def access(self, group: int, up: bool) -> SharedResource:
        """Return the access network of a device group in one direction."""
        ...

    def start(
        self, resource: SharedResource, t: Transfer, owner: int, up: bool, delay_s: float = 0.0
    ) -> Flow:
        """Start a transfer on ``resource``, its data beginning ``delay_s`` from now."""
        ...


class _Alone:
    """Links that share nothing: every transfer at its own rate (tests, ``contention`` off)."""

    def __init__(self, env: simpy.Environment) -> None:
        self._resource = SharedResource(env)

    def access(self, group: int, up: bool) -> SharedResource:
        return self._resource

    def start(
        self, resource: SharedResource, t: Transfer, owner: int, up: bool, delay_s: float = 0.0
    ) -> Flow:
        return resource.start(t.bits, t.cap_bps, owner, delay_s=delay_s)


class _Collector:
    """Reports arriving at the cloud side of a round, and the events that end collection."""

    def __init__(self, env: simpy.Environment, wanted: int, devices: int) -> None:
        self.env = env
        self.wanted = wanted
        self.reports: list[tuple[float, int]] = []
        self.enough = env.event()
        self.all_done = env.event()
        self.running = devices
        if devices == 0:
            self.all_done.succeed()

    def report(self, device_id: int) -> None:
        self.reports.append((self.env.now, device_id))
        if len(self.reports) == self.wanted and not self.enough.triggered:
            self.enough.succeed()

    def finished(self) -> None:
        self.running -= 1
        if self.running == 0 and not self.all_done.triggered:
            self.all_done.succeed()


@dataclass
class _Progress:
    """Where a device process has got to: phase end times and its two flows."""

    marks: list[float]
    flows: list[Flow | None]
    resources: list[SharedResource]
    current: int = -1  # the flow running now (0 down, 1 up), -1 none
    compute_end_s: float = math.inf  # when training ends, while waiting for it


def _flow_bytes(t: Transfer, flow: Flow | None, done_work: float) -> int:
    if flow is None:
        return 0
    if done_work >= t.bits * (1 - 1e-12):
        return t.num_bytes
    return min(t.num_bytes, int(done_work / BITS_PER_BYTE))


def _outcome(plan: DevicePlan, p: _Progress, status: Status, end_s: float) -> DeviceOutcome:
    """Return what a device did from its phase end times (``marks[0]`` is its start)."""
    marks = p.marks
    spent = [0.0, 0.0, 0.0, 0.0]
    for i in range(1, len(marks)):
        spent[i - 1] = marks[i] - marks[i - 1]
    if len(marks) < 5:
        spent[len(marks) - 1] = end_s - marks[-1]  # the phase that was cut
    done = [0.0, 0.0]
    shared = [0.0, 0.0]
    flow_s = [0.0, 0.0]
    for i, flow in enumerate(p.flows):
        if flow is not None:
            done[i] = p.resources[i].done_work(flow)
            shared[i] = flow.shared_s
            ended = flow.end_s if flow.end_s == flow.end_s else end_s
            flow_s[i] = max(0.0, ended - flow.start_s)
    return DeviceOutcome(
        plan, status, marks[0], end_s, spent[0] + spent[1], spent[1], spent[2], spent[3], 0.0,
        _flow_bytes(plan.down, p.flows[0], done[0]), _flow_bytes(plan.up, p.flows[1], done[1]),
        spent[0], shared[0], shared[1], flow_s[0], flow_s[1],
    )  # fmt: skip


def _device(
    env: simpy.Environment,
    plan: DevicePlan,
    links: Links,
    fetched: simpy.Event | None,
    col: _Collector,
    out: dict[int, DeviceOutcome],
    detect_s: float,
) -> Generator[simpy.Event, Any, None]:
    """Wait for the edge's model, download, train and upload; drop-out or close may cut it.

    A drop-out (interrupt cause ``"drop"``) or the round's close (``"close"``) stops the
    running flow where it is (its bytes so far count). The server learns of a drop-out
    ``detect_s`` after it (failure detection), or at once when ``detect_s`` is 0.
    """
    d = plan.device_id
    p = _Progress(
        [env.now], [None, None], [links.access(plan.group, False), links.access(plan.group, True)]
    )
    status = Status.COMPLETED
    try:
        if fetched is not None:
            if not fetched.processed:
                yield fetched
        elif plan.fetch_s > 0:
            yield env.timeout(plan.fetch_s)
        p.marks.append(env.now)
        # the download's round trip, then its data; then training, the upload's round trip
        # and its data: one wait each (a flow holds no share before its data begins)
        for i, t in enumerate((plan.down, plan.up)):
            delay = t.rtt_s
            if i == 1:
                p.compute_end_s = env.now + plan.compute_s
                delay += plan.compute_s
            flow = links.start(p.resources[i], t, d, up=i == 1, delay_s=delay)
            p.flows[i], p.current = flow, i
            yield flow.done
            if i == 1:
                p.marks.append(p.compute_end_s)
            p.current = -1
            p.marks.append(env.now)
        col.report(d)
    except simpy.Interrupt as irq:
        status = Status.DROPPED if irq.cause == "drop" else Status.STRAGGLER
        if p.current == 1 and env.now >= p.compute_end_s:  # training was done: cut uploading
            p.marks.append(p.compute_end_s)
        running = p.flows[p.current] if p.current >= 0 else None
        if running is not None:
            done = p.resources[p.current].stop(running)
            if p.current == 1 and irq.cause == "drop" and done >= running.work * (1 - 1e-12):
                # the upload ends at the very instant of the drop-out: the report counts
                p.marks.append(env.now)
                status = Status.COMPLETED
                col.report(d)
    out[d] = _outcome(plan, p, status, env.now)
    if status is Status.DROPPED and detect_s > 0:
        env.timeout(detect_s).callbacks.append(lambda _: col.finished())
    else:
        col.finished()


def _drop_at(env: simpy.Environment, proc: simpy.Process, at_s: float) -> None:
    """Interrupt a device's process when it goes off line (if it still runs then)."""

    def drop(_: simpy.Event) -> None:
        if proc.is_alive:
            proc.interrupt("drop")

    env.timeout(at_s - env.now).callbacks.append(drop)


def run_round(
    env: simpy.Environment,
    plans: Sequence[DevicePlan],
    wanted: int,
    deadline_s: float | None,
    links: Links | None = None,
    fetched: dict[int, simpy.Event] | None = None,
    detect_s: float = 0.0,
) -> Generator[simpy.Event, Any, RoundTiming]:
    """Play one round's collection phase; return who reported and when it closed.

    Parameters
    ----------
    env : simpy.Environment
        The simulation clock.
    plans : sequence of DevicePlan
        The selected devices, in device-id order.
    wanted : int
        Reports to keep (K); collection closes as soon as K have arrived.
    deadline_s : float or None
        Seconds after the round's start when collection closes regardless.
    links : Links, optional
        The shared access networks (default: nothing shared).
    fetched : dict, optional
        Per edge, the event of its fetching the global model this round (default: each
        device waits its plan's ``fetch_s``).
    detect_s : float
        How long after a drop-out the server notices it (0: at once).
    """
    start = env.now
    links = links if links is not None else _Alone(env)
    fetched = fetched or {}
    col = _Collector(env, wanted, len(plans))
    out: dict[int, DeviceOutcome] = {}
    procs = []
    for plan in plans:
        if plan.oom:  # cannot train: never starts
            out[plan.device_id] = _outcome(
                plan, _Progress([start], [None, None], []), Status.OOM, start
            )
            col.finished()
            continue
        proc = env.process(_device(env, plan, links, fetched.get(plan.edge_id), col, out, detect_s))
        if math.isfinite(plan.offline_at_s):
            _drop_at(env, proc, plan.offline_at_s)
        procs.append(proc)
    waits: list[simpy.Event] = [col.all_done, col.enough]
    if deadline_s is not None:
        waits.append(env.timeout(deadline_s))
    yield env.any_of(waits)
    yield env.timeout(0)  # let reports of this same instant land before closing
    close = env.now
    at_deadline = deadline_s is not None and close >= start + deadline_s
    alive = [proc for proc in procs if proc.is_alive]
    for proc in alive:  # device-id order
        proc.interrupt("close")
    if alive:
        yield env.all_of(alive)
    ordered = sorted(col.reports)
    kept_ids = {d for _, d in ordered[:wanted]}
    outcomes = [out[p.device_id] for p in plans]
    for o in outcomes:
        if o.status is Status.STRAGGLER and not at_deadline:
            o.status = Status.DISCARDED
        elif o.status is Status.COMPLETED:
            o.wait_s = close - o.end_s
            if o.plan.device_id not in kept_ids:
                o.status = Status.DISCARDED
    by_id = {o.plan.device_id: o for o in outcomes}
    kept = [by_id[d] for _, d in ordered[:wanted]]
    return RoundTiming(start, close, outcomes, kept)
