"""The in-process runtime: the same nodes as on Ray, training lazily as the edges read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedsim.algorithms.base import DeviceUpdate, State
from fedsim.runtime.base import CLOUD, Evaluation, LearningSetup, Runtime
from fedsim.runtime.device_host import DeviceHost
from fedsim.runtime.lock_step import DEFAULT_GROUP_SIZE
from fedsim.runtime.nodes import CloudServer, EdgeServer


@dataclass
class _LazyCall:
    """One host call whose devices are trained on demand, a block at a time."""

    host: DeviceHost
    base: State
    round_index: int
    device_ids: list[int]
    _trained: dict[int, DeviceUpdate] = field(default_factory=dict, init=False)

    def train(self, indices: Sequence[int]) -> None:
        """Train the devices at ``indices`` (positions in ``device_ids``) not yet trained."""
        todo = [i for i in indices if i not in self._trained]
        if todo:
            ids = [self.device_ids[i] for i in todo]
            updates = self.host.train(self.base, self.round_index, ids)
            self._trained.update(zip(todo, updates, strict=True))

    def take(self, index: int) -> DeviceUpdate:
        """Return the update at ``index`` (training it if needed) and forget it."""
        self.train([index])
        return self._trained.pop(index)


@dataclass(eq=False)
class AsyncJob:
    """An asynchronous device's training: trained on first read, with the others pending."""

    device_id: int
    key: int
    base: State
    update: DeviceUpdate | None = None


@dataclass(frozen=True)
class InlineHandle:
    """A promise of one device's update inside a lazy host call."""

    call: _LazyCall
    index: int
    num_samples: int

    def result(self) -> DeviceUpdate:
        """Return the update, training it on first read (an update is read once)."""
        return self.call.take(self.index)

    @property
    def job(self) -> tuple[int, int]:
        """Return (device id, round): the training whose private values this is about."""
        return self.call.device_ids[self.index], self.call.round_index


class InlineRuntime(Runtime):
    """Runs the cloud, the edges and one device host in the driver process.

    Training is lazy: an edge reads its updates in aggregation order (device id in a
    synchronous round), and the host trains them in blocks of ``block_size`` in that order, each
    block added to the edge's model as soon as it is trained and then freed. Devices that
    virtual time discarded are never trained, at most one block of models is alive at a
    time, and the aggregation reads models while they are still in cache. Blocking changes
    no bit of a device's update: a device's training never depends on the devices trained
    with it (tested for the per-device loop and the lock-step path).

    Parameters
    ----------
    setup : LearningSetup
        The learning side of the scenario.
    block_size : int
        Devices trained per host call.
    """

    def __init__(self, setup: LearningSetup, block_size: int = DEFAULT_GROUP_SIZE) -> None:
        self._cloud = CloudServer(setup)
        self._edges = [EdgeServer(setup, self._cloud.model()) for _ in range(setup.num_edges)]
        self._host = DeviceHost(0, setup, dict(enumerate(setup.partitions)))
        self._samples = [len(p.train_idx) for p in setup.partitions]
        self._block_size = block_size
        self._untrained: dict[int, AsyncJob] = {}  # id -> job, in submission order

    def train(
        self, edge_id: int, round_index: int, device_ids: Sequence[int]
    ) -> list[InlineHandle]:
        """Queue a host call for ``device_ids``; nothing runs until a handle is read."""
        ids = [int(d) for d in device_ids]
        call = _LazyCall(self._host, self._edges[edge_id].model(), round_index, ids)
        return [InlineHandle(call, i, self._samples[d]) for i, d in enumerate(ids)]

    def _payloads(self, handles: Sequence[InlineHandle]) -> Iterator[State]:
        """Yield the handles' payloads in order, training them block by block."""
        for start in range(0, len(handles), self._block_size):
            block = handles[start : start + self._block_size]
            by_call: dict[int, tuple[_LazyCall, list[int]]] = {}
            for h in block:
                by_call.setdefault(id(h.call), (h.call, []))[1].append(h.index)
            for call, indices in by_call.values():
                call.train(indices)
            for h in block:
                yield h.result().payload

    def aggregate_edge(self, edge_id: int, handles: Sequence[InlineHandle]) -> None:
        """Aggregate the updates at the edge, in the given order, training as it reads."""
        weights = [float(h.num_samples) for h in handles]
        self._edges[edge_id].aggregate(weights, self._payloads(handles))
        self._host.private.resolve([h.job for h in handles], ())

    def sync_cloud(self) -> None:
        """Average the edges into the global model and hand it back to every edge."""
        state = self._cloud.aggregate(*(e.upload() for e in self._edges))
        for edge in self._edges:
            edge.receive(state)

    def models(self) -> dict[str, Any]:
        """Return the servers' models and optimiser state, and the private values."""
        edges = [e.snapshot() for e in self._edges]
        return {
            "cloud": self._cloud.model(),
            "cloud_opt": self._cloud.server_state(),
            "edges": [state for state, _ in edges],
            "edge_weights": [weight for _, weight in edges],
            "private": self._host.private.snapshot(),
        }

    def load_models(self, models: dict[str, Any]) -> None:
        """Restore the cloud's and the edges' models."""
        self._cloud.restore(models["cloud"])
        self._cloud.restore_server_state(models.get("cloud_opt", {}))
        self._host.private.restore(models.get("private", {}))
        for edge, state, weight in zip(
            self._edges, models["edges"], models["edge_weights"], strict=True
        ):
            edge.restore(state, weight)

    # -- the asynchronous protocol ----------------------------------------------------------

    def _server(self, server: int) -> CloudServer | EdgeServer:
        return self._cloud if server == CLOUD else self._edges[server]

    def server_model(self, server: int) -> State:
        """Return the server's current model (models are never changed in place)."""
        return self._server(server).model()

    def train_from(self, jobs: Sequence[tuple[int, int, Any]]) -> list[AsyncJob]:
        """Queue the trainings; they run when one of them is first read."""
        out = [AsyncJob(int(d), int(key), base) for d, key, base in jobs]
        self._untrained.update((id(j), j) for j in out)
        return out

    def _payload(self, job: AsyncJob) -> State:
        """Return a job's payload, training it and the jobs queued before it first.

        Up to ``4 * block_size`` queued jobs, oldest first, train in one host call (in
        lock-step, each from its own base); the one asked for is always among them.
        """
        if job.update is None:
            queued = list(self._untrained.values())
            limit = 4 * self._block_size
            todo = queued[:limit] if job in queued[:limit] else [*queued[: limit - 1], job]
            updates = self._host.train_jobs(
                [(j.device_id, j.key) for j in todo], [j.base for j in todo]
            )
            for j, u in zip(todo, updates, strict=True):
                j.update = u
                del self._untrained[id(j)]
        assert job.update is not None
        payload, job.update = job.update.payload, None  # read once
        return payload

    def apply(self, server: int, kind: str, items: Sequence[tuple[Any, Any, float]]) -> None:
        """Apply the items at the server, training device updates as they are read."""
        self._server(server).apply(
            kind,
            [(self._payload(u) if isinstance(u, AsyncJob) else u, base, c) for u, base, c in items],
        )
        used = [(u.device_id, u.key) for u, _, _ in items if isinstance(u, AsyncJob)]
        self._host.private.resolve(used, ())

    def receive(self, edge_id: int, model: State) -> None:
        """Hand the cloud's model to an edge."""
        self._edges[edge_id].receive(model)

    def read_models(self, handles: Sequence[State]) -> list[State]:
        """Return the models (handles are the models)."""
        return list(handles)

    def put_model(self, state: State) -> State:
        """Return the model as its own handle."""
        return state

    def discard(self, handles: Sequence[Any]) -> None:
        """Forget updates virtual time discarded (untrained ones never run), and the
        private values of those that were trained."""  # noqa: D205, D209
        for h in handles:
            if isinstance(h, AsyncJob):
                self._untrained.pop(id(h), None)
                h.update = None
        jobs = [h.job if isinstance(h, InlineHandle) else (h.device_id, h.key) for h in handles]
        self._host.private.resolve((), jobs)

    def evaluate(self, ua_device_ids: Sequence[int]) -> Evaluation:
        """Evaluate the global model, and UA of the given devices."""
        accuracy, loss = self._cloud.evaluate()
        ids = [int(d) for d in ua_device_ids]
        after, before = self._host.evaluate(self._cloud.model(), ids)
        ua = dict(zip(ids, after, strict=True))
        return Evaluation(accuracy, loss, ua, dict(zip(ids, before, strict=True)) if before else {})
