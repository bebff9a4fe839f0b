"""The Ray runtime: cloud, edge and device-host actors; the driver holds only references."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from fedsim.algorithms.base import Aggregate, State
from fedsim.config import RuntimeSpec
from fedsim.data import Dataset, DevicePartition
from fedsim.errors import RuntimeFailure
from fedsim.runtime.base import Evaluation, LearningSetup, Runtime
from fedsim.runtime.evaluation import combine_scores, num_blocks
from fedsim.runtime.memory import keep_freed_memory
from fedsim.runtime.nodes import CloudServer, DeviceHost, EdgeServer
from fedsim.runtime.transport import UpdateBatch


@dataclass(frozen=True)
class RayHandle:
    """A device's update: row ``row`` of the batch a host call returns (``call``)."""

    call: Any
    row: int


def _light(setup: LearningSetup) -> LearningSetup:
    """Return the setup without the data and partitions (they travel separately).

    The dataset keeps its name and shapes but no rows: every actor's constructor arguments
    are serialised, and the arrays go once through the object store instead.
    """
    return dataclasses.replace(setup, partitions=(), dataset=setup.dataset.without_rows())


@ray.remote(num_cpus=1)
class DeviceHostActor:
    """A Ray actor owning many devices: their data views, training and evaluation."""

    def __init__(
        self, host_id: int, setup: LearningSetup, dataset: Dataset,
        partitions: dict[int, DevicePartition],
    ) -> None:  # fmt: skip
        keep_freed_memory()
        full = dataclasses.replace(setup, dataset=dataset)
        self.host = DeviceHost(host_id, full, partitions)

    def train(self, base: State, round_index: int, device_ids: list[int]) -> UpdateBatch:
        """Train the devices; their updates come back as one batch (one object)."""
        return UpdateBatch.pack(self.host.train(base, round_index, device_ids))

    def score_blocks(self, state: State, blocks: list[int]) -> list[tuple[int, float]]:
        """Score the global model on these blocks of the global test set."""
        return self.host.score_blocks(state, blocks)

    def evaluate(self, state: State, device_ids: list[int]) -> list[float]:
        """Return each device's UA."""
        return self.host.evaluate(state, device_ids)


@ray.remote(num_cpus=0)
class EdgeActor:
    """A Ray actor holding one edge's model; aggregates its devices' updates."""

    def __init__(self, setup: LearningSetup, state: State) -> None:
        keep_freed_memory()
        self.edge = EdgeServer(setup, state)
        # Aggregation runs while the device hosts wait for the next round, and it is
        # elementwise (each output element's sum is computed alone, in update order), so
        # every CPU of the node may take part without changing a bit of the result.
        # (Revisit for asynchronous rounds, where hosts keep training meanwhile.)
        torch.set_num_threads(max(setup.torch_threads, os.cpu_count() or 1))

    def model(self) -> State:
        """Return the edge's current model."""
        return self.edge.model()

    def aggregate(self, rows: list[tuple[int, int]], *batches: UpdateBatch) -> int:
        """Aggregate the updates ``batches[b].update(row)`` for ``(b, row)`` in ``rows`` order."""
        weights = [float(batches[b].num_samples[row]) for b, row in rows]
        self.edge.aggregate(weights, (batches[b].update(row).payload for b, row in rows))
        return len(rows)

    def upload(self) -> Aggregate:
        """Return the edge's payload and weight for the cloud."""
        return self.edge.upload()

    def receive(self, state: State) -> None:
        """Take the new global model."""
        self.edge.receive(state)


@ray.remote(num_cpus=0)
class CloudActor:
    """A Ray actor holding the global model and any server-side optimiser state."""

    def __init__(self, setup: LearningSetup, dataset: Dataset) -> None:
        self.cloud = CloudServer(dataclasses.replace(setup, dataset=dataset))

    def model(self) -> State:
        """Return the global model."""
        return self.cloud.model()

    def aggregate(self, *edges: Aggregate) -> State:
        """Aggregate the edges' uploads into the global model."""
        return self.cloud.aggregate(*edges)


class RayRuntime(Runtime):
    """Runs the model math on Ray actors: one cloud, one per edge, ``workers`` device hosts.

    Devices are assigned to hosts by ``device_id % workers``. Every wait on Ray is bounded
    by ``spec.timeout_s``; a dead actor or a time-out becomes a :class:`RuntimeFailure`
    naming the actor and what it was doing. Ray is shut down on :meth:`close` if this
    runtime started it.

    Parameters
    ----------
    setup : LearningSetup
        The learning side of the scenario.
    spec : RuntimeSpec
        Workers, address, timeout, dashboard.
    """

    def __init__(self, setup: LearningSetup, spec: RuntimeSpec) -> None:
        self._timeout_s = spec.timeout_s
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            if spec.address:
                ray.init(address=spec.address, include_dashboard=spec.dashboard,
                         log_to_driver=False)  # fmt: skip
            else:
                ray.init(
                    num_cpus=spec.workers,
                    include_dashboard=spec.dashboard,
                    dashboard_host="127.0.0.1",
                    _node_ip_address="127.0.0.1",
                    log_to_driver=False,
                    configure_logging=False,
                )
        try:
            self._start(setup, spec)
        except BaseException:
            self.close()
            raise

    def _start(self, setup: LearningSetup, spec: RuntimeSpec) -> None:
        light = _light(setup)
        self._num_test = int(setup.dataset.y_test.shape[0])
        dataset_ref = ray.put(setup.dataset)
        n_hosts = min(spec.workers, max(1, len(setup.partitions)))
        self._num_hosts = n_hosts
        # one CPU per host, or an equal share when more hosts than CPUs are asked for
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        host_cpus = min(1.0, cpus / n_hosts)
        self._hosts = [
            DeviceHostActor.options(num_cpus=host_cpus).remote(  # type: ignore[attr-defined]
                h,
                light,
                dataset_ref,
                {d: p for d, p in enumerate(setup.partitions) if d % n_hosts == h},
            )
            for h in range(n_hosts)
        ]
        self._cloud = CloudActor.remote(light, dataset_ref)  # type: ignore[attr-defined]
        initial = self._cloud.model.remote()
        self._edges = [
            EdgeActor.remote(light, initial)  # type: ignore[attr-defined]
            for _ in range(setup.num_edges)
        ]
        # return ref -> what it was (for error messages): host calls (large update batches,
        # waited for but never fetched by the driver) and the small edge calls
        self._host_calls: dict[Any, str] = {}
        self._calls: dict[Any, str] = {}
        # Wait until every actor process has started and built its node, so that start-up
        # (worker processes importing torch, dataset views) counts as set-up, not round 0.
        actors = [*self._hosts, *self._edges, self._cloud]
        self._get([a.__ray_ready__.remote() for a in actors], "starting the actors")
        self._get(initial, "starting the cloud actor")

    def _get(self, refs: Any, what: str) -> Any:
        """``ray.get`` with the time-out; failures name what was being done."""
        try:
            return ray.get(refs, timeout=self._timeout_s)
        except GetTimeoutError:
            raise self._timed_out(what) from None
        except RayActorError as exc:
            raise RuntimeFailure(f"an actor died while {what}: {self._culprit()}{exc}") from None
        except RayError as exc:
            raise RuntimeFailure(f"failed while {what}: {self._culprit()}{exc}") from None

    def _timed_out(self, what: str) -> RuntimeFailure:
        return RuntimeFailure(
            f"timed out after {self._timeout_s:g} s while {what} "
            "(raise runtime.timeout_s if the work is simply slow)"
        )

    def _culprit(self) -> str:
        """Name the device-host calls that failed, if any (checked without blocking)."""
        bad = []
        for ref, what in [*self._host_calls.items(), *self._calls.items()]:
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    ray.get(ref, timeout=0)
                except RayError:
                    bad.append(what)
        return ("; ".join(sorted(set(bad))) + ": ") if bad else ""

    def train(self, edge_id: int, round_index: int, device_ids: Sequence[int]) -> list[RayHandle]:
        """Submit one call per host for its share of ``device_ids``; return one handle each."""
        base = self._edges[edge_id].model.remote()
        by_host: dict[int, list[int]] = {}
        for d in device_ids:
            by_host.setdefault(int(d) % self._num_hosts, []).append(int(d))
        handle_of: dict[int, RayHandle] = {}
        for h, ids in sorted(by_host.items()):
            ref = self._hosts[h].train.remote(base, round_index, ids)
            self._host_calls[ref] = f"device host {h} training devices {ids} in round {round_index}"
            handle_of.update((d, RayHandle(ref, row)) for row, d in enumerate(ids))
        return [handle_of[int(d)] for d in device_ids]

    def aggregate_edge(self, edge_id: int, handles: Sequence[RayHandle]) -> None:
        """Hand the host calls' refs and the rows to take, in order, to the edge actor."""
        calls: dict[Any, int] = {}
        rows = [(calls.setdefault(h.call, len(calls)), h.row) for h in handles]
        ref = self._edges[edge_id].aggregate.remote(rows, *calls)
        self._calls[ref] = f"edge {edge_id} aggregating {len(handles)} updates"

    def sync_cloud(self) -> None:
        """Aggregate edges at the cloud and push the new model back; waits for it all."""
        new = self._cloud.aggregate.remote(*(e.upload.remote() for e in self._edges))
        done = [e.receive.remote(new) for e in self._edges]
        what = "aggregating edge models at the cloud"
        # Wait for the host calls without fetching their batches into the driver (a host
        # failure surfaces through the edge call that reads its batch); fetch only small
        # values.
        host_refs = list(self._host_calls)
        ready, _ = ray.wait(
            host_refs, num_returns=len(host_refs), timeout=self._timeout_s, fetch_local=False
        )
        if len(ready) < len(host_refs):
            raise self._timed_out(what)
        self._get(list(self._calls) + done, what)
        self._calls.clear()
        self._host_calls.clear()

    def evaluate(self, ua_device_ids: Sequence[int]) -> Evaluation:
        """Evaluate the global model on the cloud and UA on the hosts, in parallel."""
        return self.submit_evaluation(ua_device_ids)()

    def submit_evaluation(self, ua_device_ids: Sequence[int]) -> Callable[[], Evaluation]:
        """Queue the evaluation of the current global model; the callable waits for it.

        Actor calls run in submission order, so the cloud evaluates the model as it is now
        even if later rounds are queued before the values are read.
        """
        model = self._cloud.model.remote()
        # the device hosts wait for the next round anyway: they score the test blocks
        blocks = range(num_blocks(self._num_test))
        score_refs = [
            host.score_blocks.remote(model, list(blocks[h :: self._num_hosts]))
            for h, host in enumerate(self._hosts)
        ]
        by_host: dict[int, list[int]] = {}
        for d in ua_device_ids:
            by_host.setdefault(int(d) % self._num_hosts, []).append(int(d))
        ua_refs = {h: self._hosts[h].evaluate.remote(model, ids) for h, ids in by_host.items()}

        def values() -> Evaluation:
            per_host = self._get(score_refs, "evaluating the global model")
            scores = [per_host[b % self._num_hosts][b // self._num_hosts] for b in blocks]
            accuracy, loss = combine_scores(scores, self._num_test)
            ua: dict[int, float] = {}
            for h, ref in sorted(ua_refs.items()):
                got = self._get(ref, f"device host {h} evaluating UA")
                ua.update(zip(by_host[h], got, strict=True))
            return Evaluation(accuracy, loss, ua)

        return values

    def close(self) -> None:
        """Kill the actors and shut Ray down if this runtime started it."""
        for actor in [*getattr(self, "_hosts", []), *getattr(self, "_edges", [])]:
            ray.kill(actor)
        if hasattr(self, "_cloud"):
            ray.kill(self._cloud)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
