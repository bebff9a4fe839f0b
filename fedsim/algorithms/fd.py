"""Federated distillation (FedMD, Li and Wang 2019; PerFit section IV-D, FD-1 and FD-2).

Every device keeps its whole model, and devices may run *different* architectures (a
device group's ``model``). Only class scores travel. The cloud holds a labelled public set,
the globally shared data of ``data.sharing`` (``per_device`` equal to ``global_size``: every
device holds all of it, sent once, counted and recorded in ``data_sharing.csv``). A round
of a selected device:

1. **digest** -- when a consensus exists, ``digest_epochs`` passes of SGD towards it on the
   public rows it scores (cross-entropy against the consensus probabilities);
2. **revisit** -- ``local_epochs`` passes of local SGD on its own training rows (which hold
   the public set too, as data sharing gives them);
3. **communicate** -- its class probabilities on ``public_size`` public rows, drawn for the
   next consensus: the upload is ``public_size * classes`` float32 values and nothing else.

Servers average the uploaded probabilities (weighted by training samples, as every
aggregation in fedsim) into the consensus; the cloud's step moves to the next draw. The
global state is ``fd/consensus`` (the payload), ``fd/round`` (consensuses so far) and
``fd/seed`` (drawn from the scenario's model-initialisation stream: it keys each round's
public rows, the same on every device, runtime and resume). There is no global model: a
run's ``accuracy`` is empty and each device's UA is its own model's.

On the clock a round is the digest's steps, the revisit's, and the scoring forward pass
(``public_size`` rows, charged as one step of a third as many rows: a forward pass is a
third of a training step's FLOPs). The first round has no consensus to digest but is
charged the same (the planner does not know the round).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from fedsim.algorithms.base import Algorithm, DeviceTask, DeviceUpdate, State, epoch_batches
from fedsim.algorithms.fedavg import FedAvgParams
from fedsim.bounds import in_range
from fedsim.config import AsyncRoundsSpec, Scenario
from fedsim.profiles import TRAINING_FLOPS_PER_FORWARD
from fedsim.runtime.batchnorm import has_batchnorm
from fedsim.runtime.lock_step import train_vectorized
from fedsim.runtime.optim import model_part
from fedsim.runtime.training import DeviceJob, LocalSGD, batch_order, train_loop

CONSENSUS, ROUND, SEED = "fd/consensus", "fd/round", "fd/seed"
#: Mixed into a device's training seed for its digest's batch order (the revisit uses the seed).
_DIGEST_KEY = 0x5F3759DF


class FDParams(FedAvgParams):
    """Federated distillation's parameters: FedAvg's for the revisit, and the digest's.

    ``public_size``: public rows scored a round, 1 to 10**6 (PerFit: 500); ``digest_epochs``
    0 to 1000; ``digest_lr`` in (0, 100] (None: ``lr``); ``digest_batch_size`` 1 to 10**6
    (None: ``batch_size``). ``private`` and ``private_layers`` do not apply (the whole
    model is the device's).
    """

    public_size: Annotated[int, Field(gt=0, le=10**6)] = 500
    digest_epochs: Annotated[int, Field(ge=0, le=1000)] = 1
    digest_lr: Annotated[float, in_range(0, 100, low_open=True)] | None = None
    digest_batch_size: Annotated[int, Field(gt=0, le=10**6)] | None = None


def num_classes(model: torch.nn.Module) -> int:
    """Return the classes ``model`` scores: the output size of its last module with weights."""
    sizes = [
        int(w.shape[0])
        for m in model.modules()
        if isinstance(w := getattr(m, "weight", None), torch.Tensor)
    ]
    if not sizes:
        raise ValueError("fd: the model has no layer with weights to score classes with")
    return sizes[-1]


def public_rows(public: np.ndarray, size: int, seed: int, index: int) -> np.ndarray:
    """Return the ``index``-th draw of ``size`` public rows (sorted; the same on every device)."""
    rng = np.random.default_rng([seed, index])
    return np.sort(rng.choice(np.sort(public), size=size, replace=False))


class FederatedDistillation(Algorithm):
    """FedMD: devices with their own models exchange class scores on a public set."""

    Params = FDParams
    params: FDParams
    keeps_model = True
    #: the cloud's step moves the consensus to the next draw of public rows
    server_optimizer = True

    def bind(self, model: torch.nn.Module) -> None:
        """Every value of the model stays on the device."""
        self.private = frozenset(model.state_dict())

    def initial_state(self, model: torch.nn.Module) -> State:
        """Return the empty consensus, the round count 0 and the public rows' seed.

        The seed is drawn from torch's generator, which the cloud seeds from the scenario
        seed (model initialisation) before calling this.
        """
        classes = num_classes(model)
        return {
            CONSENSUS: torch.zeros(self.params.public_size, classes),
            ROUND: torch.tensor(0, dtype=torch.int64),
            SEED: torch.randint(0, 2**62, (), dtype=torch.int64),
        }

    def scenario_problems(self, scenario: Scenario, source: str) -> list[str]:
        """Refuse what the protocol cannot run: no public set, async, edge-only rounds."""
        out = []
        share = scenario.data.sharing
        where = f"{source}: algorithm.use: fd"
        if share is None:
            out.append(
                f"{where} needs a public set: set data.sharing with per_device equal to "
                "global_size (every device holds the globally shared data)"
            )
        elif share.per_device != share.global_size:
            out.append(
                f"{source}: data.sharing.per_device: fd needs every device to hold the whole "
                f"public set: set it to global_size ({share.global_size}), got {share.per_device}"
            )
        elif self.params.public_size > share.global_size:
            out.append(
                f"{source}: algorithm.params.public_size: {self.params.public_size} rows a "
                f"round, the public set (data.sharing.global_size) has {share.global_size}"
            )
        if isinstance(scenario.rounds, AsyncRoundsSpec):
            out.append(f"{where} runs synchronous rounds only (the consensus is a round's)")
        elif scenario.rounds.cloud_every != 1:
            out.append(
                f"{source}: rounds.cloud_every: fd needs 1 (the cloud makes each consensus), "
                f"got {scenario.rounds.cloud_every}"
            )
        if scenario.stop.target_accuracy is not None:
            out.append(
                f"{source}: stop.target_accuracy: fd has no global model to score; "
                "use stop.target_ua"
            )
        return out

    # -- the clock -----------------------------------------------------------------------

    def _revisit(self) -> LocalSGD:
        p = self.params
        return LocalSGD(lr=p.lr, local_epochs=p.local_epochs, batch_size=p.batch_size)

    def _digest_opt(self) -> LocalSGD:
        p = self.params
        return LocalSGD(
            lr=p.digest_lr or p.lr,
            local_epochs=p.digest_epochs,
            batch_size=p.digest_batch_size or p.batch_size,
        )

    def steps(self, num_samples: int) -> list[int]:
        """Return the digest's steps, the revisit's, and the scoring as one step."""
        p = self.params
        opt = self._digest_opt()
        digest = epoch_batches(p.public_size, opt.batch_size) * opt.local_epochs
        revisit = epoch_batches(num_samples, p.batch_size) * p.local_epochs
        scoring = math.ceil(p.public_size / TRAINING_FLOPS_PER_FORWARD)
        return [*digest, *revisit, scoring]

    # -- the device ------------------------------------------------------------------------

    def train(
        self,
        model: torch.nn.Module,
        base: State,
        x: torch.Tensor,
        y: torch.Tensor,
        tasks: Sequence[DeviceTask],
        vectorize: bool,
    ) -> list[DeviceUpdate]:
        """Digest, revisit and score for each device (all of one architecture)."""
        p = self.params
        jobs = []
        scored: list[np.ndarray] = []
        for t in tasks:
            assert t.base is not None, "fd: a device host gives every device its own model"
            rounds, seed = int(t.base[ROUND]), int(t.base[SEED])
            start = model_part(t.base)
            if rounds > 0 and p.digest_epochs > 0:
                rows = public_rows(t.shared_idx, p.public_size, seed, rounds)
                start = self._digest(model, start, x[rows], t.base[CONSENSUS], t.seed)
            jobs.append(DeviceJob(t.device_id, t.train_idx, t.seed, start))
            scored.append(public_rows(t.shared_idx, p.public_size, seed, rounds + 1))
        trainer = train_vectorized if vectorize else train_loop
        results = trainer(model, jobs[0].base or {}, x, y, jobs, self._revisit())
        updates = []
        for r, rows in zip(results, scored, strict=True):
            with torch.no_grad():
                logits = functional_call(model.eval(), r.state, (x[torch.from_numpy(rows)],))
            probs = F.softmax(logits, dim=1).to(torch.float32)
            own = {k: v.detach().clone() for k, v in r.state.items()}
            updates.append(
                DeviceUpdate(r.device_id, {CONSENSUS: probs}, r.num_samples, r.mean_loss, own)
            )
        return updates

    def _digest(
        self, model: torch.nn.Module, start: State, x: torch.Tensor, target: torch.Tensor, seed: int
    ) -> State:
        """Return ``start`` after SGD towards the consensus ``target`` on public rows ``x``."""
        opt = self._digest_opt()
        model.load_state_dict(start)
        model.train()
        params = {n: q for n, q in model.named_parameters() if q.requires_grad}
        batches = batch_order(
            len(x), opt.batch_size, opt.local_epochs, seed ^ _DIGEST_KEY,
            drop_singleton=has_batchnorm(model),
        )  # fmt: skip
        for b in batches:
            idx = torch.from_numpy(b)
            loss = F.cross_entropy(model(x[idx]), target[idx])
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                opt.step(params, dict(zip(params, grads, strict=True)), {})
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    # -- the servers ---------------------------------------------------------------------

    def payload_keys(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Return the consensus: the class scores are all that travels."""
        return [CONSENSUS]

    def server_step(
        self, state: State, averaged: State, opt: State, params: Sequence[str]
    ) -> tuple[State, State]:
        """Take the averaged scores as the consensus and count the round."""
        return {**averaged, ROUND: state[ROUND] + 1}, opt
