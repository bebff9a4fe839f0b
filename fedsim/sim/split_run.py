"""A split plan's batches on the clock, chained by callbacks (no process resume per batch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from fedsim.sim.costs import BITS_PER_BYTE
from fedsim.sim.records import DevicePlan
from fedsim.sim.sharing import Flow, SharedResource

if TYPE_CHECKING:
    from fedsim.sim.device import Links


def flow_s(flow: Flow | None, now: float) -> float:
    """Return a flow's seconds so far (to its end if it ended)."""
    if flow is None:
        return 0.0
    ended = flow.end_s if flow.end_s == flow.end_s else now
    return max(0.0, ended - flow.start_s)


class SplitRun:
    """A split plan's batches, chained by callbacks (no process resume per batch).

    Per batch: the device computes (its forward, and the previous batch's backward), the
    activations go up, the edge computes on its shared compute, the gradients come down.
    """

    def __init__(self, env: simpy.Environment, links: Links, plan: DevicePlan) -> None:
        assert plan.work is not None
        self.env, self.links, self.plan = env, links, plan
        self.batches = plan.work.batches
        self.tail_s = plan.work.device_tail_s
        self.up = links.access(plan.group, True)
        self.down = links.access(plan.group, False)
        self.edge = links.edge_compute[plan.edge_id]
        self.edge_fps = links.edge_flops_per_s[plan.edge_id]
        self.done = env.event()
        self.i = 0
        self.flow: Flow | None = None
        self.resource: SharedResource | None = None
        self.device_from = 0.0  # the device computes from here ...
        self.device_s = 0.0  # ... for this long (its part of the current step)
        self.device_done_s = 0.0
        self.act_up = self.act_down = 0
        self.act_up_s = self.act_down_s = 0.0
        self.edge_s = self.edge_queue_s = 0.0
        self.stopped = False

    def start(self) -> None:
        """Begin the first batch now."""
        self._batch()

    def _run(self, resource: SharedResource, flow: Flow) -> None:
        self.resource, self.flow = resource, flow

    def _batch(self) -> None:
        now = self.env.now
        if self.i == len(self.batches):
            self.device_from, self.device_s = now, self.tail_s
            self.resource = self.flow = None
            self.env.timeout(self.tail_s).callbacks.append(self._finish)
            return
        b = self.batches[self.i]
        self.device_from, self.device_s = now, b.device_before_s
        delay = b.device_before_s + b.count * self.plan.up.rtt_s
        d = self.plan.device_id
        flow = self.links.start_bits(
            self.up, b.act_bits, self.plan.up.cap_bps, d, True, delay, then=self._to_edge
        )
        self._run(self.up, flow)

    def _to_edge(self, _: Flow) -> None:
        if self.stopped:
            return
        b, flow = self.batches[self.i], self.flow
        assert flow is not None
        self.device_done_s += self.device_s
        self.device_s = 0.0
        self.act_up += int(b.act_bits) // BITS_PER_BYTE
        self.act_up_s += flow_s(flow, self.env.now)
        d = self.plan.device_id
        flow = self.edge.start(b.edge_flops, self.edge_fps, d, then=self._to_device)
        self._run(self.edge, flow)

    def _to_device(self, _: Flow) -> None:
        if self.stopped:
            return
        b, flow = self.batches[self.i], self.flow
        assert flow is not None
        self.edge_s += flow_s(flow, self.env.now)
        self.edge_queue_s += flow.shared_s
        d = self.plan.device_id
        cap = self.plan.down.cap_bps
        down = self.links.start_bits(self.down, b.act_bits, cap, d, False, then=self._next)
        self._run(self.down, down)

    def _next(self, _: Flow) -> None:
        if self.stopped:
            return
        b, flow = self.batches[self.i], self.flow
        self.act_down += int(b.act_bits) // BITS_PER_BYTE
        self.act_down_s += flow_s(flow, self.env.now)
        self.i += 1
        self._batch()

    def _finish(self, _: simpy.Event) -> None:
        if self.stopped:
            return
        self.device_done_s += self.device_s
        self.device_s = 0.0
        self.done.succeed()

    def stop(self) -> None:
        """Stop where it is: the running flow's work so far counts, the device's compute too."""
        if self.done.triggered or self.stopped:
            return
        self.stopped = True
        now = self.env.now
        self.device_done_s += min(max(0.0, now - self.device_from), self.device_s)
        flow, resource = self.flow, self.resource
        if flow is None or resource is None or not flow.running:
            return
        done = resource.stop(flow)
        if resource is self.edge:
            self.edge_s += flow_s(flow, now)
            self.edge_queue_s += flow.shared_s
        elif resource is self.up:
            self.act_up += int(done // BITS_PER_BYTE)
            self.act_up_s += flow_s(flow, now)
        else:
            self.act_down += int(done // BITS_PER_BYTE)
            self.act_down_s += flow_s(flow, now)
