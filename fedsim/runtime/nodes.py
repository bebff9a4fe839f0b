"""The servers' roles: an edge server and the cloud server, and the models they start from.

Plain classes: the inline runtime calls them in-process, the Ray runtime wraps each in
an actor. None of them knows about virtual time. The device host is
:mod:`fedsim.runtime.device_host`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from fedsim.algorithms.base import (
    Aggregate,
    Algorithm,
    State,
    build_algorithm,
)
from fedsim.algorithms.fedasync import mix
from fedsim.algorithms.fedbuff import apply_buffer
from fedsim.models import build_model
from fedsim.runtime.base import LearningSetup
from fedsim.runtime.evaluation import (
    block_scores,
    num_blocks,
)
from fedsim.runtime.transport import shared_tensor
from fedsim.seeding import Purpose, int_seed


def make_model(setup: LearningSetup, name: str | None = None) -> torch.nn.Module:
    """Build an architecture (the scenario's by default); its weights are not the global ones."""
    ds = setup.dataset
    return build_model(name or setup.model_name, ds.input_shape, ds.num_classes)


def seeded_model(setup: LearningSetup, name: str | None = None) -> torch.nn.Module:
    """Build an architecture with its initial weights, seeded from the scenario seed alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(setup.seed, Purpose.MODEL_INIT))
        return make_model(setup, name)


def initial_state(setup: LearningSetup, algorithm: Algorithm) -> State:
    """Return the initial global state, seeded from the scenario seed alone.

    The model's initial weights, and what the algorithm adds (FedAvg-Adam's moments).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int_seed(setup.seed, Purpose.MODEL_INIT))
        return algorithm.initial_state(make_model(setup))


def apply_rule(kind: str, state: State, items: Sequence[tuple[State, State, float]]) -> State:
    """Return ``state`` after a server rule's step on ``(update, base, coefficient)`` items.

    ``fedasync``: one item, mixed in (:func:`fedsim.algorithms.fedasync.mix`); ``fedbuff``:
    the buffer's weighted deltas added (:func:`fedsim.algorithms.fedbuff.apply_buffer`).
    """
    if kind == "fedasync":
        ((update, _, coefficient),) = items
        return mix(state, update, coefficient)
    if kind == "fedbuff":
        return apply_buffer(state, items)
    raise ValueError(f"unknown server rule {kind!r}")


def evaluate_state(
    model: torch.nn.Module, state: State, x: torch.Tensor, y: torch.Tensor
) -> tuple[int, float]:
    """Return (number correct, summed cross-entropy) of ``state`` on ``x``, ``y``."""
    scores = block_scores(model, state, x, y, range(num_blocks(int(x.shape[0]))))
    return sum(c for c, _ in scores), sum(loss for _, loss in scores)


class EdgeServer:
    """An edge: its current model, and the aggregation of its devices' updates."""

    def __init__(self, setup: LearningSetup, state: State) -> None:
        torch.set_num_threads(setup.torch_threads)
        self._algorithm = build_algorithm(setup.algorithm)
        self._algorithm.bind(make_model(setup))  # its private keys are not uploaded
        self._state = state
        self._weight = 0.0

    def model(self) -> State:
        """Return the edge's current model."""
        return self._state

    def aggregate(self, weights: Sequence[float], payloads: Iterable[State]) -> None:
        """Replace the edge model by the weighted mean of the payloads, read in order."""
        if not weights:
            return
        agg = self._algorithm.aggregate(self._state, weights, payloads)
        self._state, self._weight = agg.state, agg.weight

    def upload(self) -> Aggregate:
        """Return what the edge sends to the cloud: its payload tensors and their weight."""
        keys = self._algorithm.payload_keys(self._state)
        return Aggregate({k: self._state[k] for k in keys}, self._weight)

    def receive(self, state: State) -> None:
        """Take the new global model from the cloud."""
        self._state, self._weight = state, 0.0

    def apply(self, kind: str, items: Sequence[tuple[State, State, float]]) -> State:
        """Apply asynchronous updates with the server rule ``kind``; return the new model."""
        self._state = apply_rule(kind, self._state, items)
        return self._state

    def snapshot(self) -> tuple[State, float]:
        """Return the edge's model and the weight of the updates in it (a checkpoint)."""
        return self._state, self._weight

    def restore(self, state: State, weight: float) -> None:
        """Set the edge's model and weight (a resume)."""
        self._state, self._weight = state, weight


class CloudServer:
    """The cloud: the global model, its aggregation over edges, and global evaluation."""

    def __init__(self, setup: LearningSetup) -> None:
        torch.set_num_threads(setup.torch_threads)
        self._algorithm = build_algorithm(setup.algorithm)
        self._model = make_model(setup)
        self._algorithm.bind(self._model)
        self._state = initial_state(setup, self._algorithm)
        self._opt: State = {}  # the server optimiser's state (FedAdam's m and v)
        self._params = [n for n, p in self._model.named_parameters() if p.requires_grad]
        self._x_test = shared_tensor(setup.dataset.x_test)
        self._y_test = shared_tensor(setup.dataset.y_test)
        self._test_rows = setup.dataset.global_test_rows

    def model(self) -> State:
        """Return the global model."""
        return self._state

    def restore(self, state: State) -> None:
        """Set the global model (a resume)."""
        self._state = state

    def aggregate(self, *edges: Aggregate) -> State:
        """Average the edges' models (weighted by samples, in edge order); step the server.

        The algorithm's server step makes the new global model from the mean (FedAvg: the
        mean itself; FedAdam: an Adam step).
        """
        agg = self._algorithm.aggregate(
            self._state, [e.weight for e in edges], (e.state for e in edges)
        )
        if agg.weight > 0:
            self._state, self._opt = self._algorithm.server_step(
                self._state, agg.state, self._opt, self._params
            )
        return self._state

    def server_state(self) -> State:
        """Return the server optimiser's state (a checkpoint)."""
        return self._opt

    def restore_server_state(self, opt: State) -> None:
        """Set the server optimiser's state (a resume)."""
        self._opt = dict(opt)

    def apply(self, kind: str, items: Sequence[tuple[State, State, float]]) -> State:
        """Apply asynchronous updates with the server rule ``kind``; return the new model."""
        self._state = apply_rule(kind, self._state, items)
        return self._state

    def evaluate(self) -> tuple[float | None, float | None]:
        """Return accuracy and mean loss of the global model on the global test set.

        None, None when there is no global model (the devices keep theirs: fd).
        """
        if self._algorithm.keeps_model:
            return None, None
        n = self._test_rows
        x, y = self._x_test[:n], self._y_test[:n]
        correct, loss_sum = evaluate_state(self._model, self._state, x, y)
        return correct / n, loss_sum / n
