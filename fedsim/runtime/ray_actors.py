"""The Ray actors: device hosts, edges and the cloud, each wrapping its plain node."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import ray
import torch

from fedsim.algorithms.base import Aggregate, State
from fedsim.data import Dataset, DevicePartition
from fedsim.runtime.base import LearningSetup
from fedsim.runtime.device_host import DeviceHost
from fedsim.runtime.memory import keep_freed_memory
from fedsim.runtime.nodes import CloudServer, EdgeServer
from fedsim.runtime.transport import UpdateBatch


def light_setup(setup: LearningSetup) -> LearningSetup:
    """Return the setup without the data and partitions (they travel separately).

    The dataset keeps its name and shapes but no rows: every actor's constructor arguments
    are serialised, and the arrays go once through the object store instead.
    """
    return dataclasses.replace(setup, partitions=(), dataset=setup.dataset.without_rows())


def resolve_items(spec: list[Any], refs: tuple[Any, ...]) -> list[tuple[State, State, float]]:
    """Return ``(update, base, coefficient)`` items from a server step's spec and values.

    Each spec entry is ``(what, base index, coefficient)``; ``what`` is ``("row", i, row)``
    (row of the update batch ``refs[i]``) or ``("model", i)`` (the model ``refs[i]``); a
    base index of -1 means no base was sent (FedAsync does not use it): an empty model.
    """
    items = []
    for what, b, c in spec:
        value = refs[what[1]]
        update = value.update(what[2]).payload if what[0] == "row" else value
        items.append((update, refs[b] if b >= 0 else {}, c))
    return items


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
        self._intervals: list[tuple[float, float]] = []

    def train(self, base: State, round_index: int, device_ids: list[int]) -> UpdateBatch:
        """Train the devices; their updates come back as one batch (one object)."""
        return UpdateBatch.pack(self.host.train(base, round_index, device_ids))

    def train_jobs(self, spec: list[tuple[int, int, int]], *bases: State) -> UpdateBatch:
        """Train ``(device_id, key, base index)`` jobs, each from its base (asynchronous)."""
        t0 = time.time()
        jobs = [(d, key) for d, key, _ in spec]
        batch = UpdateBatch.pack(self.host.train_jobs(jobs, [bases[b] for _, _, b in spec]))
        self._intervals.append((t0, time.time()))
        return batch

    def resolve(self, used: list[tuple[int, int]], dropped: list[tuple[int, int]]) -> None:
        """Keep used trainings' private values; forget dropped ones (PrivateStore.resolve)."""
        self.host.private.resolve(used, dropped)

    def private_state(self) -> dict[str, State]:
        """Return the devices' private values (a checkpoint)."""
        return self.host.private.snapshot()

    def restore_private(self, values: dict[str, State]) -> None:
        """Set the devices' private values (a resume)."""
        self.host.private.restore(values)

    def intervals(self) -> list[tuple[float, float]]:
        """Return the wall-clock (start, end) of every asynchronous training call."""
        return list(self._intervals)

    def score_blocks(self, state: State, blocks: list[int]) -> list[tuple[int, float]]:
        """Score the global model on these blocks of the global test set."""
        return self.host.score_blocks(state, blocks)

    def evaluate(self, state: State, device_ids: list[int]) -> tuple[list[float], list[float]]:
        """Return each device's UA, and before personalisation (when the algorithm does)."""
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

    @ray.method(num_returns=2)
    def apply(self, kind: str, spec: list[Any], *refs: Any) -> tuple[State, int]:
        """Apply asynchronous updates (see :func:`resolve_items`).

        Returns the new model and the number of updates applied (a small value the driver
        reads to learn that the step ran).
        """
        return self.edge.apply(kind, resolve_items(spec, refs)), len(spec)

    def upload(self) -> Aggregate:
        """Return the edge's payload and weight for the cloud."""
        return self.edge.upload()

    def receive(self, state: State) -> None:
        """Take the new global model."""
        self.edge.receive(state)

    def snapshot(self) -> tuple[State, float]:
        """Return the edge's model and weight (a checkpoint)."""
        return self.edge.snapshot()

    def restore(self, state: State, weight: float) -> None:
        """Set the edge's model and weight (a resume)."""
        self.edge.restore(state, weight)


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

    def restore(self, state: State, opt: State | None = None) -> None:
        """Set the global model and the server optimiser's state (a resume)."""
        self.cloud.restore(state)
        self.cloud.restore_server_state(opt or {})

    def server_state(self) -> State:
        """Return the server optimiser's state (a checkpoint)."""
        return self.cloud.server_state()

    @ray.method(num_returns=2)
    def apply(self, kind: str, spec: list[Any], *refs: Any) -> tuple[State, int]:
        """Apply asynchronous updates; return the new model and the number applied."""
        return self.cloud.apply(kind, resolve_items(spec, refs)), len(spec)
