"""One synchronous round's collection on the SimPy clock: start the devices, close, keep K."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import simpy

from fedsim.sim.device import Alone, Links, device_process
from fedsim.sim.records import DeviceOutcome, DevicePlan, RoundTiming, Status

__all__ = ["DeviceOutcome", "DevicePlan", "Links", "RoundTiming", "Status", "run_round"]


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
    links = links if links is not None else Alone(env)
    fetched = fetched or {}
    col = _Collector(env, wanted, len(plans))
    out: dict[int, DeviceOutcome] = {}
    procs = []
    for plan in plans:
        if plan.oom:  # cannot train: never starts
            out[plan.device_id] = DeviceOutcome(
                plan, Status.OOM, start, start, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0,
                plan_label=plan.plan_label,
            )  # fmt: skip
            col.finished()
            continue
        fetch = fetched.get(plan.edge_id)
        proc = env.process(
            device_process(env, plan, links, fetch, col.report, col.finished, out, detect_s)
        )
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
            if o.attached:
                o.idle_s += o.wait_s
            if o.plan.device_id not in kept_ids:
                o.status = Status.DISCARDED
    by_id = {o.plan.device_id: o for o in outcomes}
    kept = [by_id[d] for _, d in ordered[:wanted]]
    return RoundTiming(start, close, outcomes, kept)
