"""The in-process runtime: the same nodes as on Ray, called lazily in the driver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedsim.algorithms.base import DeviceUpdate, State
from fedsim.runtime.base import Evaluation, LearningSetup, Runtime
from fedsim.runtime.nodes import CloudServer, DeviceHost, EdgeServer


@dataclass
class _LazyCall:
    """One host call, run on first read (so discarded work never runs)."""

    host: DeviceHost
    base: State
    round_index: int
    device_ids: list[int]
    _result: list[DeviceUpdate] | None = field(default=None, init=False)

    def result(self) -> list[DeviceUpdate]:
        if self._result is None:
            self._result = self.host.train(self.base, self.round_index, self.device_ids)
        return self._result


@dataclass(frozen=True)
class InlineHandle:
    """A promise of one device's update inside a lazy host call."""

    call: _LazyCall
    index: int

    def result(self) -> DeviceUpdate:
        """Return the update, training the whole host call on first read."""
        return self.call.result()[self.index]


class InlineRuntime(Runtime):
    """Runs the cloud, the edges and one device host in the driver process.

    Parameters
    ----------
    setup : LearningSetup
        The learning side of the scenario.
    """

    def __init__(self, setup: LearningSetup) -> None:
        self._cloud = CloudServer(setup)
        self._edges = [EdgeServer(setup, self._cloud.model()) for _ in range(setup.num_edges)]
        self._host = DeviceHost(0, setup, dict(enumerate(setup.partitions)))

    def train(
        self, edge_id: int, round_index: int, device_ids: Sequence[int]
    ) -> list[InlineHandle]:
        """Queue a host call for ``device_ids``; nothing runs until a handle is read."""
        call = _LazyCall(self._host, self._edges[edge_id].model(), round_index, list(device_ids))
        return [InlineHandle(call, i) for i in range(len(device_ids))]

    def aggregate_edge(self, edge_id: int, handles: Sequence[InlineHandle]) -> None:
        """Aggregate the updates at the edge, in the given order."""
        self._edges[edge_id].aggregate(*(h.result() for h in handles))

    def sync_cloud(self) -> None:
        """Average the edges into the global model and hand it back to every edge."""
        state = self._cloud.aggregate(*(e.upload() for e in self._edges))
        for edge in self._edges:
            edge.receive(state)

    def evaluate(self, ua_device_ids: Sequence[int]) -> Evaluation:
        """Evaluate the global model, and UA of the given devices."""
        accuracy, loss = self._cloud.evaluate()
        ids = [int(d) for d in ua_device_ids]
        ua = dict(zip(ids, self._host.evaluate(self._cloud.model(), ids), strict=True))
        return Evaluation(accuracy, loss, ua)
