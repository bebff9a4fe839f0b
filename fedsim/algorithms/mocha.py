"""MOCHA (Smith et al. 2017; PerFit section IV-C): federated multi-task learning.

Every device learns its own convex model (a single linear layer: ``logreg``), coupled to
the others through a task-relationship matrix Ω that the cloud learns from the models it
receives. With ``W`` the devices' models as rows, the problem is

    min_W  sum_t L_t(w_t) + λ/2 tr(Wᵀ Ω⁻¹ W) + μ/2 ‖W‖²,   Ω = (W Wᵀ)^½ / tr((W Wᵀ)^½)

(the relationship learning of Zhang and Yeung 2010 that MOCHA solves). The cloud
alternates: with Ω fixed the devices improve their own rows, then the cloud sets Ω in
closed form from the rows it holds. A selected device t downloads its coupling
``c_t = sum_{j != t} M_tj w_j`` and ``M_tt`` (``M = (Ω + ε I)⁻¹``, over the devices the
cloud has heard from; none before its first upload) -- P + 1 values -- and runs
``local_epochs`` of SGD on its cross-entropy plus ``λ (M_tt ‖w‖²/2 + w·c_t) + μ ‖w‖²/2``
from its own model -- the quadratic part by an implicit step,
``w ← (w − lr (g + λ c_t)) / (1 + lr (λ M_tt + μ))``, which stays stable however large
``M_tt`` grows as Ω nears singular -- and uploads its new row, P values. Edges relay
these per-device messages to and from the cloud (nothing is averaged), so the backhaul
carries one message per device.

This is MOCHA's primal form with SGD as the local solver: the original solves each
device's dual subproblem by coordinate ascent (SDCA), with the same communication
pattern. The cloud computes the couplings; in fedsim the device hosts compute them from
the rows and ``M`` the cloud holds, which gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fedsim.algorithms.base import (
    Aggregate,
    Algorithm,
    DeviceTask,
    DeviceUpdate,
    State,
    batch_count,
    epoch_batches,
)
from fedsim.bounds import in_range
from fedsim.config import AsyncRoundsSpec, Scenario
from fedsim.runtime.optim import model_part
from fedsim.runtime.training import DeviceJob, device_batches

#: The cloud's copy of device t's model (``mocha/w/<t>``) and an update on its way up.
ROW, NEW = "mocha/w/", "mocha/new/"
#: The devices the cloud holds rows of (int64, ascending) and ``M = (Ω + ε I)⁻¹`` over them.
IDS, PRECISION = "mocha/ids", "mocha/precision"


class MochaParams(BaseModel):
    """MOCHA's parameters.

    ``lr`` in (0, 100], ``local_epochs`` 1 to 1000, ``batch_size`` 1 to 10**6 (the local
    SGD); ``lam`` (λ, the strength of the task relationships) and ``weight_decay`` (μ) in
    [0, 1e6]; ``eps`` (ε, the ridge that keeps Ω invertible) in (0, 1].
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lr: Annotated[float, in_range(0, 100, low_open=True)] = 0.1
    local_epochs: Annotated[int, Field(gt=0, le=1000)] = 1
    batch_size: Annotated[int, Field(gt=0, le=10**6)] = 20
    lam: Annotated[float, in_range(0, 1e6)] = 0.1
    weight_decay: Annotated[float, in_range(0, 1e6)] = 1e-3
    eps: Annotated[float, in_range(0, 1, low_open=True)] = 1e-3


def relationships(rows: torch.Tensor, eps: float) -> torch.Tensor:
    """Return ``M = (Ω + ε I)⁻¹`` with ``Ω = (W Wᵀ)^½ / tr((W Wᵀ)^½)`` (float64)."""
    gram = rows.to(torch.float64) @ rows.to(torch.float64).T
    values, vectors = torch.linalg.eigh(gram)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    trace = float(torch.trace(root))
    omega = root / trace if trace > 0 else torch.eye(len(rows), dtype=torch.float64) / len(rows)
    return torch.linalg.inv(omega + eps * torch.eye(len(rows), dtype=torch.float64))


class Mocha(Algorithm):
    """MOCHA: per-device convex models coupled by a relationship matrix the cloud learns."""

    Params = MochaParams
    params: MochaParams
    keeps_model = True
    #: the cloud's step learns Ω from the rows (synchronous rounds only)
    server_optimizer = True
    edge_relays = True
    _names: tuple[str, ...] = ()
    _size = 0

    def bind(self, model: nn.Module) -> None:
        """Check the model is convex (one linear layer); every value stays on the device."""
        layers = [m for m in model.modules() if next(m.parameters(False), None) is not None]
        if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
            raise ValueError(
                f"model: mocha needs a convex model, a single linear layer (logreg); "
                f"{type(model).__name__} has {len(layers)} layers with parameters"
            )
        self.private = frozenset(model.state_dict())
        self._names = tuple(n for n, _ in model.named_parameters())
        self._size = sum(p.numel() for p in model.parameters())

    def initial_state(self, model: nn.Module) -> State:
        """Return the cloud's empty table: no rows yet, an empty ``M``."""
        return {
            IDS: torch.zeros(0, dtype=torch.int64),
            PRECISION: torch.zeros(0, 0, dtype=torch.float64),
        }

    def scenario_problems(self, scenario: Scenario, source: str) -> list[str]:
        """Refuse asynchronous rounds and edge rounds between the cloud's (Ω is the cloud's)."""
        if isinstance(scenario.rounds, AsyncRoundsSpec):
            return [f"{source}: algorithm.use: mocha runs synchronous rounds only"]
        if scenario.rounds.cloud_every != 1:
            return [
                f"{source}: rounds.cloud_every: mocha needs 1 (the cloud learns Ω at each "
                f"round), got {scenario.rounds.cloud_every}"
            ]
        if scenario.stop.target_accuracy is not None:
            return [
                f"{source}: stop.target_accuracy: mocha has no global model to score; "
                "use stop.target_ua"
            ]
        return []

    def transfer_sizes(self, state: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
        """Return a device's bytes down (coupling and ``M_tt``), up (its row), values up."""
        return (self._size + 1) * 4, self._size * 4, self._size

    def steps(self, num_samples: int) -> list[int]:
        """Return ``local_epochs`` passes of full batches plus the last partial one."""
        return epoch_batches(num_samples, self.params.batch_size) * self.params.local_epochs

    def num_steps(self, num_samples: int) -> int:
        """Return ``local_epochs * ceil(num_samples / batch_size)`` (without the list)."""
        return batch_count(num_samples, self.params.batch_size) * self.params.local_epochs

    def _coupling(self, state: State, device_id: int) -> tuple[float, torch.Tensor]:
        """Return ``M_tt`` and ``c_t`` for a device from the cloud's rows (0s before any)."""
        ids = state[IDS].tolist()
        coupling = torch.zeros(self._size, dtype=torch.float64)
        if device_id not in ids:
            return 0.0, coupling
        k = ids.index(device_id)
        m = state[PRECISION]
        for j, other in enumerate(ids):  # in id order: the same sum on every runtime
            if other != device_id:
                coupling += float(m[k, j]) * state[f"{ROW}{other}"].to(torch.float64)
        return float(m[k, k]), coupling

    def train(
        self,
        model: nn.Module,
        base: State,
        x: torch.Tensor,
        y: torch.Tensor,
        tasks: Sequence[DeviceTask],
        vectorize: bool,
    ) -> list[DeviceUpdate]:
        """Run each device's regularised local SGD from its own model; upload its row."""
        p = self.params
        updates = []
        for t in tasks:
            assert t.base is not None, "mocha: a device host gives every device its own model"
            m_tt, coupling = self._coupling(base, t.device_id)
            model.load_state_dict(model_part(t.base))
            model.train()
            params = [q for _, q in model.named_parameters()]
            pulls = [
                c.reshape(q.shape).to(q.dtype)
                for q, c in zip(params, coupling.split([q.numel() for q in params]), strict=True)
            ]
            shrink = 1.0 + p.lr * (p.lam * m_tt + p.weight_decay)
            job = DeviceJob(t.device_id, t.train_idx, t.seed)
            losses = []
            for rows in device_batches(job, p.batch_size, p.local_epochs, False):
                idx = torch.from_numpy(rows)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():  # the quadratic terms implicitly: stable at any M_tt
                    for q, g, c in zip(params, grads, pulls, strict=True):
                        q.sub_(p.lr * g if p.lam == 0 else p.lr * (g + p.lam * c))
                        if shrink != 1.0:
                            q.div_(shrink)
                losses.append(float(loss.detach()))
            own = {k: v.detach().clone() for k, v in model.state_dict().items()}
            row = torch.cat([own[n].reshape(-1) for n in self._names])
            mean = sum(losses) / len(losses) if losses else 0.0
            updates.append(
                DeviceUpdate(t.device_id, {f"{NEW}{t.device_id}": row}, len(t.train_idx), mean, own)
            )
        return updates

    def payload_keys(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Return the rows on their way up (a device's own; an edge's, all it relays)."""
        return sorted(k for k in state if k.startswith(NEW))

    def aggregate(
        self, base: State, weights: Sequence[float], payloads: Iterable[State]
    ) -> Aggregate:
        """Collect the rows (nothing is averaged: each row is one device's model)."""
        out = dict(base)
        for payload in payloads:
            out.update(payload)
        return Aggregate(out, float(sum(weights)))

    def server_step(
        self, state: State, averaged: State, opt: State, params: Sequence[str]
    ) -> tuple[State, State]:
        """File the new rows under their devices and learn ``M`` from every row held."""
        out = {k: v for k, v in averaged.items() if not k.startswith(NEW)}
        for key, row in averaged.items():
            if key.startswith(NEW):
                out[ROW + key[len(NEW) :]] = row
        ids = sorted(int(k[len(ROW) :]) for k in out if k.startswith(ROW))
        out[IDS] = torch.tensor(ids, dtype=torch.int64)
        rows = torch.stack([out[f"{ROW}{d}"] for d in ids])
        out[PRECISION] = relationships(rows, self.params.eps)
        return out, opt
