"""The algorithm contract: what devices compute and upload, and how servers aggregate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from fedsim.algorithms import BUILTIN_ALGORITHMS
from fedsim.config import ComponentSpec, Scenario, validation_problems
from fedsim.errors import InputError
from fedsim.registry import resolve

State = dict[str, torch.Tensor]


class NoParams(BaseModel):
    """An algorithm without parameters."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class DeviceTask:
    """One device's share of a host call: its data, its keyed seed, its own base model.

    ``base`` None: the device starts from the call's ``base`` (a synchronous round).
    ``shared_idx``: the rows of ``train_idx`` the cloud sent it (``data.sharing``; the
    public set of federated distillation).
    """

    device_id: int
    train_idx: np.ndarray
    seed: int
    base: State | None = None
    shared_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class DeviceUpdate:
    """What a device sends up (payload, aggregation weight) and what it keeps (private)."""

    device_id: int
    payload: State
    num_samples: int
    mean_loss: float
    private: State = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """A weighted model held by an edge or the cloud: the state and its total weight."""

    state: State
    weight: float


def epoch_batches(num_samples: int, batch_size: int) -> list[int]:
    """Return the batch sizes of one pass over ``num_samples``: full ones, then the rest."""
    full, rest = divmod(num_samples, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def batch_count(num_samples: int, batch_size: int) -> int:
    """Return ``len(epoch_batches(num_samples, batch_size))`` without the list."""
    return -(-num_samples // batch_size)


class Algorithm(ABC):
    """Base class of an FL algorithm (one file per algorithm holds all its halves).

    Subclasses set ``Params`` to a pydantic model of their scenario parameters and
    implement :meth:`steps` and :meth:`train`; the default :meth:`payload_keys` and
    :meth:`aggregate` give FedAvg's behaviour.
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    #: Optimiser values a device keeps per trainable parameter (0 for plain SGD, 2 for
    #: Adam's moments); counted in the training memory footprint.
    optimizer_values_per_param: ClassVar[int] = 0
    #: Whether :meth:`server_step` is more than taking the mean: a server optimiser
    #: (FedAdam's Adam, pFedMe's mixing with beta < 1). Synchronous rounds only: an
    #: asynchronous server applies its own rule. A class may set it per instance.
    server_optimizer: bool = False
    #: Whether each device keeps its whole model and the global state holds none of it
    #: (federated distillation: only class scores travel). Then there is no global model
    #: to evaluate, a device starts from its architecture's seeded initial weights, and
    #: device groups may train other architectures than the scenario's ``model``.
    keeps_model: ClassVar[bool] = False
    #: Whether edges relay each device's message to and from the cloud instead of one
    #: model (MOCHA: each device's own row up, its coupling down): the backhaul then
    #: carries one device's payload per device.
    edge_relays: ClassVar[bool] = False

    def __init__(self, params: BaseModel) -> None:
        self.params = params
        #: Keys that stay on the device (MTFL's patches; see :meth:`bind`).
        self.private: frozenset[str] = frozenset()

    def bind(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Learn which of the model's values stay on devices (none by default).

        Called by every place that uses the algorithm with a model: device hosts, edges,
        the cloud, and the check that counts payload bytes.
        """

    def initial_state(self, model: torch.nn.Module) -> State:
        """Return the initial global state: ``model``'s values, and any the algorithm adds.

        The default is the model's ``state_dict``; FedAvg-Adam adds the devices' Adam
        moments and step count (keys under :data:`fedsim.runtime.optim.OPT_PREFIX`), which
        then travel, are averaged and are checkpointed with the model.
        """
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    @abstractmethod
    def steps(self, num_samples: int) -> list[int]:
        """Return the batch size of every local step of a device with ``num_samples``.

        The clock charges each entry as one training step (a forward and a backward pass)
        on that batch: an algorithm whose step takes several batch gradients (Per-FedAvg,
        pFedMe) lists one entry per gradient.
        """

    def largest_batch(self, num_samples: int) -> int:
        """Return the largest batch of a device with ``num_samples`` (1 when it has none).

        The default scans :meth:`steps`; override it when that list could be long.
        """
        return max(self.steps(num_samples), default=1)

    def num_steps(self, num_samples: int) -> int:
        """Return how many local steps a device with ``num_samples`` takes a round.

        The default counts :meth:`steps`; override it when that list could be long.
        """
        return len(self.steps(num_samples))

    @abstractmethod
    def train(
        self,
        model: torch.nn.Module,
        base: State,
        x: torch.Tensor,
        y: torch.Tensor,
        tasks: Sequence[DeviceTask],
        vectorize: bool,
    ) -> list[DeviceUpdate]:
        """Train the devices of ``tasks`` from ``base`` on rows of ``x``/``y``."""

    def server_step(
        self, state: State, averaged: State, opt: State, params: Sequence[str]
    ) -> tuple[State, State]:
        """Return the cloud's new global model and server-optimiser state after a sync.

        ``state`` is the global model before the round, ``averaged`` the weighted mean the
        cloud aggregated, ``opt`` the optimiser state from the last sync (empty at first),
        ``params`` the names of the trainable parameters (the rest are buffers). The
        default (FedAvg) takes the mean as the new model; a server optimiser (FedAdam)
        treats ``averaged - state`` as a pseudo-gradient.
        """
        return averaged, opt

    def scenario_problems(self, scenario: Scenario, source: str) -> list[str]:
        """Return one line per setting of ``scenario`` this algorithm cannot run with.

        Checked with the scenario before anything is loaded (``fedsim validate`` and
        ``run``); the default accepts every scenario.
        """
        return []

    def personalisation_steps(self, num_samples: int) -> list[int]:
        """Return the batch sizes of the steps a device takes after training to personalise.

        The personalisation stage (:mod:`fedsim.sim.personalisation`) charges them to the
        virtual clock and the device's energy once the rounds end; the default is none.
        """
        return []

    def personalise(
        self,
        model: torch.nn.Module,
        state: State,
        x: torch.Tensor,
        y: torch.Tensor,
        train_idx: np.ndarray,
        seed: int,
    ) -> State | None:
        """Return a device's user model (UA) made from ``state``, or None to use ``state``.

        ``state`` is the global model (patched with the device's private values, if any),
        ``x``/``y`` the host's training samples, ``train_idx`` the device's rows of them,
        ``seed`` keyed by the scenario seed, the device and the evaluated model (so the
        same evaluation draws the same batch on any runtime, and after a resume). ``model``
        is a scratch model of the architecture. Device hosts call it, one device at a
        time, only when a subclass overrides it; the default (FedAvg, MTFL) returns None.
        """
        return None

    def updates(self, base: State, results: Iterable[Any]) -> list[DeviceUpdate]:
        """Return the devices' updates from their trained states (``DeviceResult``-like).

        The payload is :meth:`payload_keys` of ``base``; the private values are copied
        (a lock-step result's state is a view into its chunk: the copy does not hold it).
        """
        keys = self.payload_keys(base)
        return [
            DeviceUpdate(
                r.device_id, {k: r.state[k] for k in keys}, r.num_samples, r.mean_loss,
                {k: r.state[k].clone() for k in self.private},
            )
            for r in results
        ]  # fmt: skip

    def transfer_sizes(self, state: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
        """Return one device's bytes down and up a round, and the values a server takes in.

        The default: the tensors of :meth:`payload_keys` of the initial ``state``, the same
        both ways (the model down, the update up).
        """
        keys = self.payload_keys(state)
        size = sum(state[k].numel() * state[k].element_size() for k in keys)
        return size, size, sum(state[k].numel() for k in keys)

    def payload_keys(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Return the names of the tensors a device uploads (this decides the bytes)."""
        return [k for k, v in state.items() if v.is_floating_point() and k not in self.private]

    def aggregate(
        self, base: State, weights: Sequence[float], payloads: Iterable[State]
    ) -> Aggregate:
        """Return the weighted mean of the payloads; keys not uploaded keep ``base``.

        ``payloads`` is read once, in order, one payload at a time (a runtime may produce
        them as it trains; the caller orders them, by device id in a synchronous round);
        their ``weights`` are known up front. Each payload is added into float64
        accumulators before the next is read, so the result is bit-reproducible.
        """
        total = float(sum(weights))
        if not weights or total <= 0:
            return Aggregate(dict(base), 0.0)
        acc: dict[str, torch.Tensor] = {}
        for payload, weight in zip(payloads, weights, strict=True):
            for key, value in payload.items():
                if key not in acc:
                    acc[key] = torch.zeros_like(value, dtype=torch.float64)
                # float32 promoted to float64 inside the add: exact, no temporary copy
                acc[key].add_(value, alpha=weight / total)
        out = dict(base)
        out.update((key, a.to(base[key].dtype)) for key, a in acc.items())
        return Aggregate(out, total)


def build_algorithm(spec: ComponentSpec, source: str = "scenario") -> Algorithm:
    """Resolve ``spec.use`` and validate ``spec.params`` against the class's ``Params``."""
    try:
        cls = resolve(spec.use, BUILTIN_ALGORITHMS, "algorithm")
    except LookupError as exc:
        raise InputError(f"{source}: algorithm.use: {exc}") from None
    if not issubclass(cls, Algorithm):
        raise InputError(f"{source}: algorithm.use: {spec.use!r} is not an fedsim Algorithm")
    try:
        params = cls.Params.model_validate(dict(spec.params))
    except ValidationError as exc:
        lines = validation_problems(source, exc)
        raise InputError([line.replace(": ", ": algorithm.params.", 1) for line in lines]) from None
    return cls(params)


def algorithm_summary(algorithm: Algorithm) -> dict[str, Any]:
    """Return the algorithm's class and resolved params (for run.json)."""
    cls = type(algorithm)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "params": algorithm.params.model_dump(),
    }
