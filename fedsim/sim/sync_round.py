"""One synchronous round on the SimPy clock: device, edge and cloud processes."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import simpy

from fedsim.sim.costs import Transfer


class Status(str, Enum):
    """What became of a selected device in a round."""

    COMPLETED = "completed"
    STRAGGLER = "straggler"
    DROPPED = "dropped"
    DISCARDED = "discarded"


@dataclass(frozen=True)
class DevicePlan:
    """A device's modelled round, all drawn at dispatch (independent of training).

    Attributes
    ----------
    device_id, edge_id : int
        Who and where.
    fetch_s : float
        Waiting for the edge to fetch the model from the cloud (0 when it has it).
    down, up : Transfer
        The access-link download of the model and upload of the update.
    compute_s : float
        Local training time.
    offline_at_s : float
        Absolute virtual time the device goes off line (``inf``: stays on line).
    """

    device_id: int
    edge_id: int
    fetch_s: float
    down: Transfer
    compute_s: float
    up: Transfer
    offline_at_s: float

    def finish_s(self, start_s: float) -> float:
        """Return when the device would report if nothing cut it."""
        return start_s + self.fetch_s + self.down.duration_s + self.compute_s + self.up.duration_s


@dataclass
class DeviceOutcome:
    """What a device did in a round, phase by phase (seconds actually spent)."""

    plan: DevicePlan
    status: Status
    start_s: float
    end_s: float
    download_s: float
    access_down_s: float
    compute_s: float
    upload_s: float
    wait_s: float
    bytes_down: int
    bytes_up: int


@dataclass(frozen=True)
class RoundTiming:
    """The timing result of one round."""

    start_s: float
    close_s: float
    outcomes: list[DeviceOutcome]
    kept: list[DeviceOutcome]


class _Collector:
    """Reports arriving at the cloud side of a round, and the event that ends collection."""

    def __init__(self, env: simpy.Environment, wanted: int) -> None:
        self.env = env
        self.wanted = wanted
        self.reports: list[tuple[float, int]] = []
        self.enough = env.event()
        self.closed = env.event()

    def report(self, device_id: int) -> None:
        self.reports.append((self.env.now, device_id))
        if len(self.reports) == self.wanted and not self.enough.triggered:
            self.enough.succeed()


def _device(
    env: simpy.Environment, plan: DevicePlan, col: _Collector, out: dict[int, DeviceOutcome]
) -> Generator[simpy.Event, Any, None]:
    """Download, train and upload, racing the device's drop-out and the round's close."""
    start = env.now
    spent = {"fetch": 0.0, "down": 0.0, "compute": 0.0, "up": 0.0}
    phases = (
        ("fetch", plan.fetch_s),
        ("down", plan.down.duration_s),
        ("compute", plan.compute_s),
        ("up", plan.up.duration_s),
    )
    drop = env.timeout(plan.offline_at_s - start) if math.isfinite(plan.offline_at_s) else None
    status = Status.COMPLETED
    finished: set[str] = set()
    for name, duration in phases:
        began = env.now
        done = env.timeout(duration)
        waits = [done, col.closed] + ([drop] if drop is not None else [])
        yield env.any_of(waits)
        spent[name] = env.now - began
        if env.now < began + duration:
            status = Status.DROPPED if drop is not None and drop.processed else Status.STRAGGLER
            break
        finished.add(name)
    if status is Status.COMPLETED:
        col.report(plan.device_id)
    out[plan.device_id] = DeviceOutcome(
        plan,
        status,
        start,
        env.now,
        spent["fetch"] + spent["down"],
        spent["down"],
        spent["compute"],
        spent["up"],
        0.0,
        plan.down.num_bytes if "down" in finished else plan.down.bytes_done_by(spent["down"]),
        plan.up.num_bytes if "up" in finished else plan.up.bytes_done_by(spent["up"]),
    )


def run_round(
    env: simpy.Environment,
    plans: Sequence[DevicePlan],
    wanted: int,
    deadline_s: float | None,
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
    """
    start = env.now
    col = _Collector(env, wanted)
    out: dict[int, DeviceOutcome] = {}
    procs = [env.process(_device(env, p, col, out)) for p in plans]
    waits: list[simpy.Event] = [env.all_of(procs), col.enough]
    if deadline_s is not None:
        waits.append(env.timeout(deadline_s))
    yield env.any_of(waits)
    yield env.timeout(0)  # let reports of this same instant land before closing
    close = env.now
    at_deadline = deadline_s is not None and close >= start + deadline_s
    col.closed.succeed()
    yield env.all_of(procs)
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
