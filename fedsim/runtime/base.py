"""The runtime contract: where the model math runs, seen from the simulation driver."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedsim.algorithms.base import State
from fedsim.config import ComponentSpec
from fedsim.data import Dataset, DevicePartition

#: The cloud's number among servers (edges are 0, 1, ...).
CLOUD = -1


@dataclass(frozen=True)
class LearningSetup:
    """Everything the cloud, the edges and the device hosts need to build themselves.

    Attributes
    ----------
    seed : int
        The scenario seed (training seeds are keyed from it per device and round).
    model_name : str
        Model name in the model zoo.
    dataset : Dataset
        The whole dataset; hosts keep views of it, never per-device copies.
    partitions : tuple of DevicePartition
        Each device's train and test indices, by device id.
    algorithm : ComponentSpec
        The algorithm, resolved in every actor.
    num_edges : int
        Number of edges.
    torch_threads : int
        Torch intra-op threads in every place that computes.
    vectorize : bool or "auto"
        Train the devices of one host call in lock-step (batched); ``"auto"``: when the
        model has the hand-fused lock-step path (:func:`~fedsim.runtime.lock_step.can_fuse`).
    device_models : dict of int to str
        The devices that train another architecture than ``model_name`` (a device group's
        ``model``), by device id; empty: every device trains ``model_name``.
    """

    seed: int
    model_name: str
    dataset: Dataset
    partitions: tuple[DevicePartition, ...]
    algorithm: ComponentSpec
    num_edges: int
    torch_threads: int = 1
    vectorize: bool | Literal["auto"] = False
    device_models: Mapping[int, str] = field(default_factory=dict)

    def model_of(self, device_id: int) -> str:
        """Return the architecture a device trains."""
        return self.device_models.get(device_id, self.model_name)


@dataclass(frozen=True)
class Evaluation:
    """The global model's accuracy and loss, and each evaluated device's UA.

    ``accuracy`` and ``loss`` are None when there is no global model (``fd``).
    ``ua_before``: for algorithms that personalise (FTL), each device's UA before it.
    """

    accuracy: float | None
    loss: float | None
    ua: dict[int, float]
    ua_before: dict[int, float] = field(default_factory=dict)

    def ua_quantiles(self) -> tuple[float, float, float, float] | None:
        """Return mean, p10, p50 and p90 of UA, or None when UA was not measured."""
        if not self.ua:
            return None
        values = np.array([self.ua[d] for d in sorted(self.ua)], dtype=np.float64)
        p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
        return float(values.mean()), float(p10), float(p50), float(p90)


class Runtime(ABC):
    """Where training, aggregation and evaluation run (in-process or on Ray actors).

    The driver holds opaque handles to device updates; values move between hosts,
    edges and the cloud without the driver reading them. Handles are aggregated in
    the order the driver gives (device id in a synchronous round). ``failures`` lists
    the real failures the runtime recovered from (a dead worker), one line each.
    """

    failures: Sequence[str] = ()

    @abstractmethod
    def train(self, edge_id: int, round_index: int, device_ids: Sequence[int]) -> list[Any]:
        """Submit training of ``device_ids`` from edge ``edge_id``'s current model.

        Returns one handle per device, in the order of ``device_ids``.
        """

    @abstractmethod
    def aggregate_edge(self, edge_id: int, handles: Sequence[Any]) -> None:
        """Replace the edge's model by the weighted mean of these updates, in this order."""

    @abstractmethod
    def sync_cloud(self) -> None:
        """Aggregate the edges' models into a new global model and send it to the edges."""

    @abstractmethod
    def evaluate(self, ua_device_ids: Sequence[int]) -> Evaluation:
        """Evaluate the global model (and UA on the given devices); blocks for the values."""

    def submit_evaluation(self, ua_device_ids: Sequence[int]) -> Callable[[], Evaluation]:
        """Start evaluating the current global model; the returned callable gives the values.

        The values are those of the global model at submission, however late they are read,
        so a runtime with actors can evaluate while the next round trains. The default
        evaluates at once.
        """
        evaluation = self.evaluate(ua_device_ids)
        return lambda: evaluation

    @abstractmethod
    def models(self) -> dict[str, Any]:
        """Return the servers' models for a checkpoint (tensors, lists and floats only).

        Called at a round boundary, when no update is in flight.
        """

    @abstractmethod
    def load_models(self, models: dict[str, Any]) -> None:
        """Restore the servers' models from :meth:`models`' value (a resume)."""

    # -- the asynchronous protocol (docs/async.md) ---------------------------------------
    # Servers are numbered: CLOUD (-1) or an edge id. Models and updates are opaque handles;
    # nothing here blocks: a runtime trains when a result is first needed (inline) or as
    # soon as its base model exists (Ray).

    @abstractmethod
    def server_model(self, server: int) -> Any:
        """Return a handle to the server's current model (what a device downloads now)."""

    @abstractmethod
    def train_from(self, jobs: Sequence[tuple[int, int, Any]]) -> list[Any]:
        """Submit ``(device_id, key, base model handle)`` trainings; one handle each.

        ``key`` (the dispatch number) keys the device's training seed.
        """

    @abstractmethod
    def apply(self, server: int, kind: str, items: Sequence[tuple[Any, Any, float]]) -> None:
        """Apply ``(update, base model, coefficient)`` items at a server with rule ``kind``.

        An update is a device's handle from :meth:`train_from` or a model handle (an edge's
        model forwarded to the cloud). The server's model becomes a new version.
        """

    @abstractmethod
    def receive(self, edge_id: int, model: Any) -> None:
        """Replace an edge's model by ``model`` (a handle; the cloud's reply to a forward)."""

    @abstractmethod
    def read_models(self, handles: Sequence[Any]) -> list[State]:
        """Return the models behind model handles (a checkpoint)."""

    @abstractmethod
    def put_model(self, state: State) -> Any:
        """Return a model handle holding ``state`` (a resume)."""

    def busy_intervals(self) -> list[tuple[int, float, float]]:
        """Return ``(host, start, end)`` wall-clock seconds of asynchronous training calls.

        Empty where not measured (the inline runtime has one host).
        """
        return []

    def discard(self, handles: Sequence[Any]) -> None:  # noqa: B027 - optional hook
        """Forget updates that virtual time discarded (cancel them where possible)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release every resource (actors, processes)."""
