"""The shared half of algorithms whose devices run a gradient rule (Per-FedAvg, pFedMe).

A subclass gives its ``Params`` (with ``batch_size`` and ``local_epochs``), its local step
(:attr:`LocalRuleAlgorithm.rule`, a :class:`fedsim.runtime.meta_training.LocalRule`) and the
clock's :meth:`~fedsim.algorithms.base.Algorithm.steps`; training (per device or in
lock-step), the updates and the user model are the same for all of them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedsim.algorithms.base import Algorithm, DeviceTask, DeviceUpdate, State
from fedsim.runtime.meta_training import LocalRule, train_lock_step, train_loop, user_model
from fedsim.runtime.training import DeviceJob


class LocalRuleAlgorithm(Algorithm):
    """An algorithm whose devices take ``rule``'s steps; servers as the base class says."""

    params: Any  # a pydantic model with batch_size and local_epochs

    @property
    @abstractmethod
    def rule(self) -> LocalRule:
        """Return the local step."""

    def largest_batch(self, num_samples: int) -> int:
        """Return ``min(batch_size, num_samples)`` (1 when there are no samples)."""
        return min(self.params.batch_size, num_samples) or 1

    def train(
        self,
        model: torch.nn.Module,
        base: State,
        x: torch.Tensor,
        y: torch.Tensor,
        tasks: Sequence[DeviceTask],
        vectorize: bool,
    ) -> list[DeviceUpdate]:
        """Run the rule's steps for each device (lock-step batched when ``vectorize``)."""
        jobs = [DeviceJob(t.device_id, t.train_idx, t.seed, t.base) for t in tasks]
        trainer = train_lock_step if vectorize else train_loop
        p = self.params
        return self.updates(
            base, trainer(model, base, x, y, jobs, self.rule, p.batch_size, p.local_epochs)
        )

    def personalise(
        self,
        model: torch.nn.Module,
        state: State,
        x: torch.Tensor,
        y: torch.Tensor,
        train_idx: np.ndarray,
        seed: int,
    ) -> State | None:
        """Return the rule's user model from ``state`` on one seeded batch of the device."""
        return user_model(model, state, x, y, train_idx, seed, self.rule, self.params.batch_size)
