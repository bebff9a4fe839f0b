"""An asynchronous run's traffic between edges and the cloud, on the edges' backhauls.

Without buffering edges, an edge keeps a copy of the cloud's model for its devices and
fetches the current version when a device asks for one its copy lacks (devices asking for
the same version share the fetch), and relays each device's update to the cloud. With
buffering edges, each edge version is forwarded to the cloud, and the cloud's reply (its
new model) replaces the edge's model when it arrives. Every transfer's draws are keyed
(edge, version or dispatch, direction), and every byte is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

from fedsim.runtime.base import CLOUD
from fedsim.sim.async_servers import Update
from fedsim.sim.network import Network
from fedsim.sim.planning import RoundPlanner


class Backhaul:
    """The edges' side of the cloud's model, and what is on the backhauls.

    Parameters
    ----------
    env : simpy.Environment
        The clock.
    planner : RoundPlanner
        Draws each transfer.
    network : Network
        The backhauls.
    num_edges : int
        Edges in the topology.
    initial : Any
        The runtime's handle of the initial global model (None without learning).
    count_bytes : callable
        Called with (bytes up, bytes down) of every transfer started.
    """

    def __init__(
        self, env: simpy.Environment, planner: RoundPlanner, network: Network, num_edges: int,
        initial: Any, count_bytes: Callable[[int, int], None],
    ) -> None:  # fmt: skip
        self.env = env
        self.planner = planner
        self.network = network
        self.count_bytes = count_bytes
        # per edge: the cloud version of its copy (relaying) or of its model's base (buffering)
        self.cloud_version = [0] * num_edges
        self.cloud_model: list[Any] = [initial] * num_edges
        self.fetching: dict[int, tuple[int, simpy.Event, float]] = {}
        self.forwards: dict[int, Update] = {}  # edge models on their way to the cloud
        self.replies: dict[int, list[Any]] = {}  # cloud models on their way to edges
        self._next = 0

    def _start(self, edge: int, up: bool, key: int) -> simpy.Event:
        t = (self.planner.edge_uploads if up else self.planner.edge_fetch)({edge}, key)[edge]
        self.count_bytes(t.num_bytes if up else 0, 0 if up else t.num_bytes)
        links = self.network.backhaul_up if up else self.network.backhaul_down
        return links[edge].start(t.bits, t.cap_bps, edge, delay_s=t.rtt_s).done

    def fetch(self, edge: int, version: int) -> tuple[simpy.Event | None, float]:
        """Start (or join) the edge's fetch of cloud ``version`` if its copy lacks it.

        Returns the fetch's end (None: the copy has it) and its length alone.
        """
        if self.cloud_version[edge] == version:
            return None, 0.0
        going = self.fetching.get(edge)
        if going is not None and going[0] == version:
            return going[1], going[2]
        duration = self.planner.edge_fetch({edge}, version)[edge].duration_s
        done = self._start(edge, False, version)
        self.fetching[edge] = (version, done, duration)

        def arrived(_: simpy.Event) -> None:
            if self.fetching.get(edge, (None,))[0] == version:
                del self.fetching[edge]
            self.cloud_version[edge] = max(self.cloud_version[edge], version)

        done.callbacks.append(arrived)
        return done, duration

    def relay(self, u: Update, then: Callable[[], None]) -> None:
        """Carry a device's update (dispatch ``u.key``) up the edge's backhaul; ``then``."""
        assert u.key is not None
        self._start(u.edge_id, True, u.key).callbacks.append(lambda _: then())

    def forward(
        self, edge: int, edge_version: int, model: Any, then: Callable[[Update], None]
    ) -> None:
        """Send an edge's model up as an update of the cloud model it last received."""
        u = Update(CLOUD, self.cloud_version[edge], self.cloud_model[edge], self.env.now, edge)
        u.handle = model
        n, self._next = self._next, self._next + 1
        self.forwards[n] = u
        done = self._start(edge, True, edge_version)
        done.callbacks.append(lambda _: then(self.forwards.pop(n)))

    def reply(self, edge: int, version: int, model: Any, then: Callable[[Any], None]) -> None:
        """Send cloud ``version`` down to an edge; ``then(model)`` when it arrives.

        Nothing happens on arrival if the edge has a newer cloud model by then.
        """
        n, self._next = self._next, self._next + 1
        self.replies[n] = [model]

        def arrived(_: simpy.Event) -> None:
            (got,) = self.replies.pop(n)
            if version <= self.cloud_version[edge]:
                return
            self.cloud_version[edge], self.cloud_model[edge] = version, got
            then(got)

        self._start(edge, False, version).callbacks.append(arrived)
