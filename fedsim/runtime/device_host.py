"""A device host: many simulated devices' data views, their training and their evaluation.

A plain class: the inline runtime calls it in-process, the Ray runtime wraps it in an
actor. It holds one scratch model per architecture its devices train, and the private
values its devices keep between rounds (:class:`~fedsim.runtime.private_store.PrivateStore`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch
from torch.func import functional_call

from fedsim.algorithms.base import Algorithm, DeviceTask, DeviceUpdate, State, build_algorithm
from fedsim.data import Dataset, DevicePartition
from fedsim.runtime.base import LearningSetup
from fedsim.runtime.evaluation import block_scores, shared_model_accuracies
from fedsim.runtime.lock_step import resolve_vectorize
from fedsim.runtime.nodes import make_model, seeded_model
from fedsim.runtime.optim import model_part
from fedsim.runtime.private_store import PrivateStore
from fedsim.runtime.transport import shared_tensor
from fedsim.seeding import Purpose, int_seed


class DeviceHost:
    """Many simulated devices: views of their data, and their training and evaluation.

    Parameters
    ----------
    host_id : int
        Index of this host.
    setup : LearningSetup
        The learning side of the scenario (its ``partitions`` are not used here).
    partitions : Mapping of int to DevicePartition
        The devices this host owns and their data indices.
    """

    def __init__(
        self, host_id: int, setup: LearningSetup, partitions: Mapping[int, DevicePartition]
    ) -> None:
        torch.set_num_threads(setup.torch_threads)
        self.host_id = host_id
        self._seed = setup.seed
        self._algorithm: Algorithm = build_algorithm(setup.algorithm)
        self._partitions = dict(partitions)
        # one scratch model per architecture; a device trains its group's (fd: several)
        self._arch = {d: setup.model_of(d) for d in self._partitions}
        names = sorted({setup.model_name, *self._arch.values()})
        self._models = {n: make_model(setup, n) for n in names}
        self._model = self._models[setup.model_name]
        self._algorithm.bind(self._model)
        self._vectorize = {
            n: resolve_vectorize(setup.vectorize, m) for n, m in self._models.items()
        }
        # fd: a device with no model of its own yet starts from its architecture's weights
        self._keeps = self._algorithm.keeps_model
        self._fill: dict[str, State] = (
            {n: seeded_model(setup, n).state_dict() for n in names} if self._keeps else {}
        )
        # user models made per device (Per-FedAvg, pFedMe) only when the algorithm does so
        self._personalises = type(self._algorithm).personalise is not Algorithm.personalise
        self.private = PrivateStore()
        ds: Dataset = setup.dataset
        self._x_train, self._y_train = shared_tensor(ds.x_train), shared_tensor(ds.y_train)
        self._x_test, self._y_test = shared_tensor(ds.x_test), shared_tensor(ds.y_test)
        self._test_rows = ds.global_test_rows

    def _start(self, device_id: int, base: State) -> State:
        """Return a device's own starting model: ``base`` with its private values in place.

        With an algorithm whose devices keep their whole model (fd), ``base`` (the global
        values) is laid over the architecture's initial weights first.
        """
        if self._keeps:
            base = {**self._fill[self._arch[device_id]], **base}
        return self.private.patched(device_id, base)

    def train(self, base: State, round_index: int, device_ids: Sequence[int]) -> list[DeviceUpdate]:
        """Train ``device_ids`` from ``base``; one update per device, in the given order."""
        return self.train_jobs([(int(d), round_index) for d in device_ids], [base])

    def train_jobs(
        self, jobs: Sequence[tuple[int, int]], bases: Sequence[State]
    ) -> list[DeviceUpdate]:
        """Train ``(device_id, key)`` jobs, job i from ``bases[i]`` (one base: all from it).

        ``key`` is the round (synchronous) or the dispatch number (asynchronous) that the
        device's training seed is keyed by. Devices of one architecture train in one call
        of the algorithm (lock-step where it applies); the updates come in job order.
        """
        own = self._keeps or len(bases) > 1 or any(d in self.private.own for d, _ in jobs)
        tasks = [
            DeviceTask(
                d,
                self._partitions[d].train_idx,
                int_seed(self._seed, Purpose.TRAIN, d, key),
                self._start(d, bases[i if len(bases) > 1 else 0]) if own else None,
                self._partitions[d].shared_idx,
            )
            for i, (d, key) in enumerate(jobs)
        ]
        by_arch: dict[str, list[int]] = {}
        for i, (d, _) in enumerate(jobs):
            by_arch.setdefault(self._arch[d], []).append(i)
        updates: list[DeviceUpdate | None] = [None] * len(jobs)
        for name, rows in by_arch.items():
            got = self._algorithm.train(
                self._models[name], bases[0], self._x_train, self._y_train,
                [tasks[i] for i in rows], self._vectorize[name],
            )  # fmt: skip
            for i, u in zip(rows, got, strict=True):
                updates[i] = u
        done = [u for u in updates if u is not None]
        for (d, key), u in zip(jobs, done, strict=True):
            self.private.record(d, key, u.private)
        return done

    def score_blocks(self, state: State, blocks: Sequence[int]) -> list[tuple[int, float]]:
        """Return (correct, summed loss) of ``state`` on these blocks of the global test set."""
        n = self._test_rows  # the global test set (noisy clients' copies come after it)
        return block_scores(self._model, state, self._x_test[:n], self._y_test[:n], blocks)

    def evaluate(self, state: State, device_ids: Sequence[int]) -> tuple[list[float], list[float]]:
        """Return each device's accuracy of its user model on its test split, and before.

        The user model is ``state`` (the global model), patched with the device's private
        values where it has any, and personalised on the device's training rows when the
        algorithm personalises (:meth:`~fedsim.algorithms.base.Algorithm.personalise`);
        then each device's test rows are its own forward pass. The personalisation seed is
        keyed by the device and a digest of ``state``'s values: the same evaluation draws
        the same batch on any runtime and after a resume; another evaluation, another.
        The second list holds, when the algorithm personalises, every device's accuracy
        before personalisation (the patched global model); otherwise it is empty.
        """
        ids = [int(d) for d in device_ids]
        own = [d for d in ids if self._keeps or self._personalises or d in self.private.own]
        mine = set(own)
        shared = [d for d in ids if d not in mine]
        out = dict(zip(shared, self._shared_accuracies(state, shared), strict=True))
        before: dict[int, float] = {}
        if own:
            key = _state_key(state) if self._personalises else 0
            for d in own:
                out[d], pre = self._user_accuracy(state, d, key)
                if pre is not None:
                    before[d] = pre
        return [out[d] for d in ids], [before[d] for d in ids if d in before]

    def _shared_accuracies(self, state: State, ids: Sequence[int]) -> list[float]:
        """Return the accuracy of ``state`` on each device's test rows (blocks, read once)."""
        test_idx = [self._partitions[d].test_idx for d in ids]
        return shared_model_accuracies(self._model, state, self._x_test, self._y_test, test_idx)

    def _user_accuracy(self, state: State, device_id: int, key: int) -> tuple[float, float | None]:
        """Return one device's accuracy of its own user model (and before personalising).

        Accuracy on its own test rows only: one forward pass of the device's rows (not of
        the test blocks holding them: a patched model serves one device only), so the figure
        depends on nothing but the device's model and rows. The second value is the
        accuracy of the model before :meth:`Algorithm.personalise` (None when the algorithm
        does not personalise).
        """
        part = self._partitions[device_id]
        model = self._models[self._arch[device_id]]
        user = self._start(device_id, state)
        rows = torch.from_numpy(part.test_idx)
        before = self._accuracy(model, user, rows) if self._personalises else None
        if self._personalises:
            seed = int_seed(self._seed, Purpose.PERSONALISE, device_id, key)
            mine = self._algorithm.personalise(
                model, user, self._x_train, self._y_train, part.train_idx, seed
            )
            user = user if mine is None else mine
        return self._accuracy(model, user, rows), before

    def _accuracy(self, model: torch.nn.Module, user: State, rows: torch.Tensor) -> float:
        """Return the accuracy of ``user`` on test ``rows`` (0 when there are none)."""
        if len(rows) == 0:
            return 0.0
        with torch.no_grad():  # the user's tensors themselves, not copies into the module
            logits = functional_call(model.eval(), model_part(user), (self._x_test[rows],))
            hits = logits.argmax(1) == self._y_test[rows]
        return float(hits.sum()) / len(rows)


def _state_key(state: State) -> int:
    """Return a 63-bit key of ``state``'s values (a personalisation's seed, per evaluation).

    ``evaluate`` is not told the version it evaluates; the model's bytes stand for it, the
    same on every runtime and after a resume.
    """
    digest = hashlib.blake2b(digest_size=8)
    for k in sorted(state):
        values = state[k].detach().contiguous().view(-1)
        digest.update(values.view(torch.uint8).numpy().data)
    return int.from_bytes(digest.digest(), "little") >> 1
