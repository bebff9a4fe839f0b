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
        if self.running == 0:
            self.all_done.succeed()


def phase_ends(plan: DevicePlan, start_s: float) -> tuple[float, float, float, float]:
    """Return when fetch, download, compute and upload would end (summed in clock order)."""
    fetched = start_s + plan.fetch_s
    downloaded = fetched + plan.down.duration_s
    computed = downloaded + plan.compute_s
    return fetched, downloaded, computed, computed + plan.up.duration_s


def outcome(plan: DevicePlan, start_s: float, cut_s: float | None, status: Status) -> DeviceOutcome:
    """Return what a device did, from its phase times and when (if at all) it was cut.

    A phase that ends exactly at the cut time counts as done; the next one is then cut
    after 0 s. Seconds spent are differences of absolute clock times, as a process that
    yields one timeout per phase would measure them.

    Parameters
    ----------
    plan : DevicePlan
        The device's drawn round.
    start_s : float
        When the device started.
    cut_s : float or None
        When drop-out or the round's close stopped it; None if it reported.
    status : Status
        Its status.
    """
    ends = phase_ends(plan, start_s)
    spent = [0.0, 0.0, 0.0, 0.0]
    done = 0
    prev = start_s
    for i, end in enumerate(ends):
        if cut_s is not None and end > cut_s:
            spent[i] = cut_s - prev
            break
        spent[i] = end - prev
        prev = end
        done += 1
    bytes_down = plan.down.num_bytes if done > 1 else plan.down.bytes_done_by(spent[1])
    bytes_up = plan.up.num_bytes if done > 3 else plan.up.bytes_done_by(spent[3])
    end_s = ends[3] if cut_s is None else cut_s
    return DeviceOutcome(
        plan, status, start_s, end_s, spent[0] + spent[1], spent[1], spent[2], spent[3], 0.0,
        bytes_down, bytes_up,
    )  # fmt: skip


def _device(
    env: simpy.Environment, plan: DevicePlan, col: _Collector, out: dict[int, DeviceOutcome]
) -> Generator[simpy.Event, Any, None]:
    """Download, train and upload, racing the device's drop-out and the round's close.

    The device's own end (report or drop-out) is known when it starts, so it waits for
    that instant with one timeout; the round interrupts it if collection closes first.
    Phase times and statuses follow from the times alone (:func:`outcome`).
    """
    start = env.now
    finish = phase_ends(plan, start)[3]
    drop = start + (plan.offline_at_s - start) if math.isfinite(plan.offline_at_s) else math.inf
    try:
        if finish <= drop:
            delay = finish - start
            if start + delay == finish:
                yield env.timeout(delay)
            else:  # rounding: step phase by phase so the clock lands on ``finish`` exactly
                for seconds in (
                    plan.fetch_s,
                    plan.down.duration_s,
                    plan.compute_s,
                    plan.up.duration_s,
                ):
                    yield env.timeout(seconds)
            col.report(plan.device_id)
            out[plan.device_id] = outcome(plan, start, None, Status.COMPLETED)
        else:
            yield env.timeout(plan.offline_at_s - start)
            out[plan.device_id] = outcome(plan, start, env.now, Status.DROPPED)
    except simpy.Interrupt:
        out[plan.device_id] = outcome(plan, start, env.now, Status.STRAGGLER)
    col.finished()


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
    col = _Collector(env, wanted, len(plans))
    out: dict[int, DeviceOutcome] = {}
    procs = [env.process(_device(env, p, col, out)) for p in plans]
    waits: list[simpy.Event] = [col.all_done, col.enough]
    if deadline_s is not None:
        waits.append(env.timeout(deadline_s))
    yield env.any_of(waits)
    yield env.timeout(0)  # let reports of this same instant land before closing
    close = env.now
    at_deadline = deadline_s is not None and close >= start + deadline_s
    for proc in procs:  # device-id order
        if proc.is_alive:
            proc.interrupt()
    yield col.all_done
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
