"""The servers of an asynchronous run on the clock: arrivals, staleness, buffers, versions.

A server (the cloud, or an edge running its own rule) takes arriving updates one at a time,
in arrival order: an update staler than ``max_staleness`` is discarded; under ``fedasync``
it is applied at once, under ``fedbuff`` it waits in the buffer until ``buffer_size`` are
there. Applying takes the server's compute for the aggregation's FLOPs (shared with
whatever else runs there); the version counts up when it is done.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy

from fedsim.config_rounds import ServerRuleSpec
from fedsim.sim.costs import aggregation_flops
from fedsim.sim.records import DeviceOutcome, DevicePlan
from fedsim.sim.sharing import SharedResource
from fedsim.sim.staleness import coefficient


@dataclass(eq=False)
class Update:
    """One update on its way to or at a server: a device's, or an edge's forwarded model.

    ``handle`` is the runtime's handle of the trained update (None: not trained, e.g.
    without learning); ``base`` the handle of the model it was trained from (its
    ``base_version`` at ``server``).
    """

    server: int
    base_version: int
    base: Any
    dispatch_s: float
    edge_id: int
    key: int | None = None  # dispatch number (device updates)
    device_id: int | None = None
    plan: DevicePlan | None = None
    handle: Any = None
    outcome: DeviceOutcome | None = None
    counted: bool = False  # its device row is in a version's window
    arrival_s: float = math.nan
    staleness: int = 0
    weight: float = 0.0


class VirtualServer:
    """A server's side of the protocol on the clock (no tensors; the runtime holds those).

    Parameters
    ----------
    env : simpy.Environment
        The clock.
    server : int
        The cloud (-1) or an edge id.
    rule : ServerRuleSpec
        How it applies updates.
    max_staleness : int or None
        Updates staler than this are discarded.
    compute : SharedResource
        The server's compute.
    flops_per_s : float
        Its FLOP rate alone.
    num_params : int
        Model values per update (aggregation FLOPs).
    on_stale : callable
        Called with an update discarded for staleness.
    on_apply : callable
        Called with the server and the updates of a step once applied.
    on_done : callable
        Called with every update once the server has handled it (applied, buffered or
        discarded): the moment its device's slot is free again.
    """

    def __init__(
        self, env: simpy.Environment, server: int, rule: ServerRuleSpec,
        max_staleness: int | None, compute: SharedResource, flops_per_s: float,
        num_params: int, on_stale: Callable[[Update], None],
        on_apply: Callable[[VirtualServer, list[Update]], None],
        on_done: Callable[[Update], None],
    ) -> None:  # fmt: skip
        self.env = env
        self.server = server
        self.rule = rule
        self.max_staleness = max_staleness
        self.compute = compute
        self.flops_per_s = flops_per_s
        self.num_params = num_params
        self.on_stale = on_stale
        self.on_apply = on_apply
        self.on_done = on_done
        self.version = 0
        self.queue: deque[Update] = deque()
        self.buffer: list[Update] = []
        self.busy_s = 0.0  # compute seconds spent applying (since the driver last read it)
        self._running = False
        self.halted = False

    def arrive(self, update: Update) -> None:
        """Take an arriving update (processed in arrival order)."""
        update.arrival_s = self.env.now
        self.queue.append(update)
        if not self._running:
            self._running = True
            self.env.process(self._work())

    def _work(self) -> Generator[simpy.Event, Any, None]:
        while self.queue and not self.halted:
            u = self.queue.popleft()
            u.staleness = self.version - u.base_version
            if self.max_staleness is not None and u.staleness > self.max_staleness:
                self.on_stale(u)
                self.on_done(u)
                continue
            u.weight = coefficient(self.rule, u.staleness)
            if self.rule.kind == "fedbuff":
                self.buffer.append(u)
                if len(self.buffer) < self.rule.buffer_size:
                    self.on_done(u)
                    continue
                step, self.buffer = self.buffer, []
            else:
                step = [u]
            start = self.env.now
            flops = aggregation_flops(self.num_params, len(step))
            yield self.compute.start(flops, self.flops_per_s, self.server).done
            self.busy_s += self.env.now - start
            if self.halted:
                break
            self.version += 1
            self.on_apply(self, step)
            self.on_done(u)
        self._running = False
