"""A device's round on the clock: local training, full offload to the edge, or split training.

One generalised process serves every plan. Its phases are ``fetch`` (waiting, idle, for
the edge's copy of the global model), ``down`` (the model, or the device's part of it),
``compute`` (local training; the edge training for it under ``full``; the batches of a
split, device and edge taking turns) and ``up`` (the update, or under ``full`` the training
data). A drop-out (interrupt cause ``"drop"``) or the round's close (``"close"``) stops
whatever flow runs (its bytes so far count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy

from fedsim.offload.work import OffloadWork
from fedsim.sim.costs import BITS_PER_BYTE, Transfer
from fedsim.sim.records import DeviceOutcome, DevicePlan, Status
from fedsim.sim.sharing import Flow, SharedResource
from fedsim.sim.split_run import SplitRun, flow_s

FETCH, DOWN, COMPUTE, UP = 0, 1, 2, 3


class Links(Protocol):
    """Where a device's transfers and offloaded work run (:class:`fedsim.sim.network.Network`)."""

    @property
    def edge_compute(self) -> Sequence[SharedResource]:
        """Each edge's compute."""
        ...

    @property
    def edge_flops_per_s(self) -> Sequence[float]:
        """Each edge's FLOP rate alone."""
        ...

    def access(self, group: int, up: bool) -> SharedResource:
        """Return the access network of a device group in one direction."""
        ...

    def start_bits(
        self, resource: SharedResource, bits: float, cap_bps: float, owner: int, up: bool,
        delay_s: float = 0.0, then: Callable[[Flow], None] | None = None,
    ) -> Flow:  # fmt: skip
        """Start ``bits`` on ``resource`` at most ``cap_bps``, ``delay_s`` from now."""
        ...


class _Everywhere:
    """The same value for every index."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __getitem__(self, index: int) -> Any:
        return self._value


class Alone:
    """Links that share nothing: every transfer at its own rate (tests)."""

    def __init__(self, env: simpy.Environment, edge_flops_per_s: float = 1e12) -> None:
        self._resource = SharedResource(env)
        self.edge_compute: Any = _Everywhere(self._resource)
        self.edge_flops_per_s: Any = _Everywhere(edge_flops_per_s)

    def access(self, group: int, up: bool) -> SharedResource:
        """Return the one unlimited resource."""
        return self._resource

    def start_bits(
        self, resource: SharedResource, bits: float, cap_bps: float, owner: int, up: bool,
        delay_s: float = 0.0, then: Callable[[Flow], None] | None = None,
    ) -> Flow:  # fmt: skip
        """Start a flow at the given cap."""
        return resource.start(bits, cap_bps, owner, delay_s=delay_s, then=then)


@dataclass
class _Track:
    """Where a device's process has got to: seconds per phase, flows, offloaded counters."""

    start_s: float
    spent: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    phase: int = -1
    since: float = 0.0
    switch_at: float = math.inf  # a phase change inside one wait (compute, then upload)
    running: tuple[SharedResource, Flow] | None = None
    split: SplitRun | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    data_bytes_up: int = 0
    down_flow: Flow | None = None
    up_flow: Flow | None = None
    edge_flow: Flow | None = None
    device_compute_s: float = 0.0
    detached_s: float = math.inf  # when a full offload released the device (no stay_online)

    def begin(self, phase: int, now: float, switch_at: float = math.inf) -> None:
        self.end(now)
        self.phase, self.since, self.switch_at = phase, now, switch_at

    def end(self, now: float) -> None:
        if self.phase < 0:
            return
        if now >= self.switch_at:  # the merged wait reached its second phase
            self.spent[self.phase] += self.switch_at - self.since
            self.phase, self.since = self.phase + 1, self.switch_at
        self.spent[self.phase] += now - self.since
        self.phase, self.switch_at = -1, math.inf


def _bytes(t_bits: float, t_bytes: int, done_bits: float) -> int:
    if done_bits >= t_bits * (1 - 1e-12):
        return t_bytes
    return min(t_bytes, int(done_bits / BITS_PER_BYTE))


def _transfer(
    links: Links, plan: DevicePlan, tr: _Track, t: Transfer, up: bool, delay_s: float
) -> Generator[simpy.Event, Any, None]:
    resource = links.access(plan.group, up)
    flow = links.start_bits(resource, t.bits, t.cap_bps, plan.device_id, up, delay_s + t.rtt_s)
    tr.running = (resource, flow)
    if up:
        tr.up_flow = flow
    else:
        tr.down_flow = flow
    yield flow.done
    tr.running = None


def _local_or_split(
    env: simpy.Environment, links: Links, plan: DevicePlan, fetched: simpy.Event | None,
    tr: _Track,
) -> Generator[simpy.Event, Any, None]:  # fmt: skip
    tr.begin(FETCH, env.now)
    if fetched is not None:
        if not fetched.processed:
            yield fetched
    elif plan.fetch_s > 0:
        yield env.timeout(plan.fetch_s)
    tr.begin(DOWN, env.now)
    yield from _transfer(links, plan, tr, plan.down, False, 0.0)
    tr.bytes_down = plan.down.num_bytes
    if plan.work is None:  # train, then the upload's round trip and data: one wait
        tr.begin(COMPUTE, env.now, switch_at=env.now + plan.compute_s)
        tr.device_compute_s = plan.compute_s
        yield from _transfer(links, plan, tr, plan.up, True, plan.compute_s)
    else:
        tr.begin(COMPUTE, env.now)
        tr.split = SplitRun(env, links, plan)
        tr.split.start()
        yield tr.split.done
        tr.begin(UP, env.now)
        yield from _transfer(links, plan, tr, plan.up, True, 0.0)
    tr.bytes_up = plan.up.num_bytes
    tr.end(env.now)


def _full(
    env: simpy.Environment, links: Links, plan: DevicePlan, fetched: simpy.Event | None,
    tr: _Track,
) -> Generator[simpy.Event, Any, None]:  # fmt: skip
    work = plan.work
    assert work is not None
    if work.data_bits > 0:  # the training data goes to the edge (the first time)
        tr.begin(UP, env.now)
        up = links.access(plan.group, True)
        flow = links.start_bits(
            up, work.data_bits, plan.up.cap_bps, plan.device_id, True, plan.up.rtt_s
        )
        tr.running, tr.up_flow = (up, flow), flow
        yield flow.done
        tr.running = None
        tr.data_bytes_up = int(work.data_bits) // 8
    if not plan.stay_online:
        tr.detached_s = env.now
    tr.begin(FETCH, env.now)
    if fetched is not None and not fetched.processed:
        yield from _released(fetched, tr)
    tr.begin(COMPUTE, env.now)
    edge = links.edge_compute[plan.edge_id]
    flow = edge.start(work.edge_flops, links.edge_flops_per_s[plan.edge_id], plan.device_id)
    tr.running, tr.edge_flow = (edge, flow), flow
    yield from _released(flow.done, tr)
    tr.running = None
    tr.end(env.now)


def _released(event: simpy.Event, tr: _Track) -> Generator[simpy.Event, Any, None]:
    """Wait for ``event``; a device a full offload released may go off line meanwhile."""
    while not event.processed:
        try:
            yield event
        except simpy.Interrupt as irq:
            if irq.cause != "drop" or math.isinf(tr.detached_s):
                raise


def device_process(
    env: simpy.Environment,
    plan: DevicePlan,
    links: Links,
    fetched: simpy.Event | None,
    report: Any,
    finished: Any,
    out: dict[int, DeviceOutcome],
    detect_s: float,
) -> Generator[simpy.Event, Any, None]:
    """Play a device's round; record its outcome; call ``report`` if it reported.

    ``finished`` is called when the server knows the device is done: at once, or
    ``detect_s`` after a drop-out (failure detection).
    """
    d = plan.device_id
    tr = _Track(env.now)
    status = Status.COMPLETED
    full = plan.work is not None and plan.work.plan.kind == "full"
    try:
        if full:
            yield from _full(env, links, plan, fetched, tr)
        else:
            yield from _local_or_split(env, links, plan, fetched, tr)
        report(d)
    except simpy.Interrupt as irq:
        status = Status.DROPPED if irq.cause == "drop" else Status.STRAGGLER
        tr.end(env.now)
        if tr.split is not None:
            tr.split.stop()
        if tr.running is not None:
            resource, flow = tr.running
            done = resource.stop(flow)
            if flow is tr.down_flow:
                tr.bytes_down = _bytes(plan.down.bits, plan.down.num_bytes, done)
            elif flow is tr.up_flow and not full:
                tr.bytes_up = _bytes(plan.up.bits, plan.up.num_bytes, done)
                if irq.cause == "drop" and tr.bytes_up == plan.up.num_bytes:
                    status = Status.COMPLETED  # the upload ends at the instant of the drop
                    report(d)
            elif flow is tr.up_flow and plan.work is not None:
                tr.data_bytes_up = _bytes(plan.work.data_bits, int(plan.work.data_bits) // 8, done)
    out[d] = _outcome(plan, tr, status, env.now)
    if status is Status.DROPPED and detect_s > 0:
        env.timeout(detect_s).callbacks.append(lambda _: finished())
    else:
        finished()


def _outcome(plan: DevicePlan, tr: _Track, status: Status, end_s: float) -> DeviceOutcome:
    """Return what a device did from its tracked phases and flows."""
    s = tr.spent
    work: OffloadWork | None = plan.work
    kind = "local" if work is None else work.plan.kind
    split = tr.split
    down_s = flow_s(tr.down_flow, end_s)
    up_s = flow_s(tr.up_flow, end_s)
    rx = s[DOWN] + (split.act_down_s if split is not None else 0.0)
    tx = s[UP] + (split.act_up_s if split is not None else 0.0)
    compute = tr.device_compute_s if kind == "local" else 0.0
    if split is not None:
        compute = split.device_done_s
    if kind == "local" and s[COMPUTE] < plan.compute_s:
        compute = s[COMPUTE]  # cut while training
    active_end = min(end_s, tr.detached_s)
    idle = max(0.0, (active_end - tr.start_s) - compute - rx - tx)
    edge_s, edge_queue_s = 0.0, 0.0
    if split is not None:
        edge_s, edge_queue_s = split.edge_s, split.edge_queue_s
    elif tr.edge_flow is not None:
        edge_s, edge_queue_s = flow_s(tr.edge_flow, end_s), tr.edge_flow.shared_s
    return DeviceOutcome(
        plan, status, tr.start_s, end_s, s[FETCH] + s[DOWN], s[DOWN], s[COMPUTE], s[UP], 0.0,
        tr.bytes_down, tr.bytes_up, s[FETCH],
        tr.down_flow.shared_s if tr.down_flow is not None else 0.0,
        tr.up_flow.shared_s if tr.up_flow is not None else 0.0,
        down_s, up_s,
        plan_label=plan.plan_label, device_compute_s=compute, rx_s=rx, tx_s=tx, idle_s=idle,
        edge_compute_s=edge_s, edge_queue_s=edge_queue_s,
        act_bytes_up=split.act_up if split is not None else 0,
        act_bytes_down=split.act_down if split is not None else 0,
        data_bytes_up=tr.data_bytes_up, raw_data_left=tr.data_bytes_up > 0,
        attached=math.isinf(tr.detached_s),
    )  # fmt: skip
