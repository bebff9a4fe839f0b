"""The topology's shared resources: access networks, backhauls, edge and cloud compute."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import simpy

from fedsim.config import Scenario
from fedsim.profiles import ProfileLibrary
from fedsim.sim.population import Population
from fedsim.sim.sharing import Flow, SharedResource


class BandwidthSource(Protocol):
    """A per-device bandwidth trace (:class:`fedsim.sim.traces.BandwidthTrace`)."""

    def covers(self, device_id: int) -> bool:
        """Return True if the trace gives this device's rates."""
        ...

    def rate_mbps(self, device_id: int, t_s: float, up: bool) -> float:
        """Return the device's rate in force at ``t_s``."""
        ...

    def next_change_s(self, device_id: int, t_s: float) -> float:
        """Return the device's first rate change after ``t_s`` (``inf`` if none)."""
        ...


class Network:
    """Every shared resource of a topology, made once and kept for the whole run.

    Per edge: its access network in each direction for each link profile its devices use
    (capacity ``edges[i].access_mbps[link]`` or the link profile's ``shared_mbps``), its
    backhaul in each direction (the backhaul profile's ``shared_mbps``), and its compute
    (the edge hardware's FLOP rate); the cloud's compute. With ``network.contention:
    false`` every capacity is unlimited: each transfer runs at its own rate, as alone.

    Parameters
    ----------
    env : simpy.Environment
        The clock.
    scenario : Scenario
        The validated scenario.
    profiles : ProfileLibrary
        Hardware and link profiles.
    population : Population
        The device table.
    bandwidth : BandwidthSource or None
        A bandwidth trace; the devices it covers take their rates from it.
    """

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        profiles: ProfileLibrary,
        population: Population,
        bandwidth: BandwidthSource | None = None,
    ) -> None:
        self.env = env
        self.bandwidth = bandwidth
        on = scenario.network.contention

        def shared(capacity: float) -> SharedResource:
            return SharedResource(env, capacity if on else math.inf)

        access: dict[tuple[int, str, bool], SharedResource] = {}
        self.backhaul_up: list[SharedResource] = []
        self.backhaul_down: list[SharedResource] = []
        self.edge_compute: list[SharedResource] = []
        self.edge_flops_per_s: list[float] = []
        for e, edge in enumerate(scenario.topology.edges):
            for link_name in sorted({g.link for g in edge.devices}):
                link = profiles.link(link_name)
                over = edge.access_mbps.get(link_name)
                up = over.up if over is not None and over.up is not None else link.shared_up_mbps
                down = link.shared_down_mbps
                if over is not None and over.down is not None:
                    down = over.down
                access[(e, link_name, True)] = shared(up * 1e6)
                access[(e, link_name, False)] = shared(down * 1e6)
            backhaul = profiles.link(edge.backhaul)
            self.backhaul_up.append(shared(backhaul.shared_up_mbps * 1e6))
            self.backhaul_down.append(shared(backhaul.shared_down_mbps * 1e6))
            flops = profiles.device(edge.hardware).flops_per_s
            self.edge_compute.append(shared(flops))
            self.edge_flops_per_s.append(flops)
        self.cloud_flops_per_s = profiles.device(scenario.topology.cloud.hardware).flops_per_s
        self.cloud_compute = shared(self.cloud_flops_per_s)
        self._group_up = [access[(g.edge_id, g.link, True)] for g in population.groups]
        self._group_down = [access[(g.edge_id, g.link, False)] for g in population.groups]
        self._resources = [
            *access.values(), *self.backhaul_up, *self.backhaul_down, *self.edge_compute,
            self.cloud_compute,
        ]  # fmt: skip

    def access(self, group: int, up: bool) -> SharedResource:
        """Return the access network a device group uses in one direction."""
        return self._group_up[group] if up else self._group_down[group]

    def traced(self, device_id: int) -> bool:
        """Return True if a bandwidth trace gives this device's rates."""
        return self.bandwidth is not None and self.bandwidth.covers(device_id)

    def start_bits(
        self, resource: SharedResource, bits: float, cap_bps: float, owner: int, up: bool,
        delay_s: float = 0.0, then: Callable[[Flow], None] | None = None,
    ) -> Flow:  # fmt: skip
        """Start ``bits`` on ``resource`` at most ``cap_bps``: the data begins ``delay_s`` on.

        A traced device's cap is its trace rate instead, updated at each change of the
        trace for as long as the flow runs.
        """
        if not self.traced(owner):
            return resource.start(bits, cap_bps, owner, delay_s=delay_s, then=then)
        assert self.bandwidth is not None
        trace = self.bandwidth
        begin = self.env.now + delay_s
        cap = trace.rate_mbps(owner, begin, up) * 1e6
        flow = resource.start(bits, cap, owner, fixed_cap=False, delay_s=delay_s, then=then)

        def follow(at_s: float) -> None:
            change = trace.next_change_s(owner, at_s)
            if math.isfinite(change):
                timer = self.env.timeout(change - self.env.now)
                timer.callbacks.append(lambda _: update())

        def update() -> None:
            if flow.running:
                now = self.env.now
                resource.set_cap(flow, trace.rate_mbps(owner, now, up) * 1e6)
                follow(now)

        follow(begin)
        return flow

    def busiest(self) -> int:
        """Return the most flows any resource has held at once so far."""
        return max((r.max_flows for r in self._resources), default=0)
