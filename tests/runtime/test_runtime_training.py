"""Local training of simulated devices: the per-device loop and the vectorised path."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from fedsim.runtime.fused import _fused_plan
from fedsim.runtime.lock_step import train_vectorized
from fedsim.runtime.training import DeviceJob, LocalSGD, batch_order, train_loop

ATOL, RTOL = 1e-5, 1e-4


# ---------------------------------------------------------------- models (local on purpose)


def mlp_bn() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 200),
        nn.ReLU(),
        nn.BatchNorm1d(200),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 10),
    )


class TwoNN(nn.Module):
    """A 2NN written as a custom module (the fused path must still recognise it)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 200)
        self.out = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = nn.functional.relu(self.fc2(x))
        return self.out(x)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp_bn": (mlp_bn, (784,)),
    "mlp": (mlp, (784,)),
    "cnn": (small_cnn, (1, 12, 12)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    factory, _ = MODELS[name]
    with torch.random.fork_rng():
        torch.random.manual_seed(seed)  # model init only; fork_rng restores the global state
        model = factory()
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def data(shape: tuple[int, ...], n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def jobs_of(sizes: list[int], seed: int = 7) -> list[DeviceJob]:
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    perm = rng.permutation(total).astype(np.int64)
    out, start = [], 0
    for d, size in enumerate(sizes):
        out.append(
            DeviceJob(device_id=100 + d, train_idx=perm[start : start + size], seed=1000 + d)
        )
        start += size
    return out


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- batch order


def test_batch_order_permutes_each_epoch_and_keeps_partial_batch() -> None:
    batches = batch_order(23, 5, 2, seed=3)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3] * 2
    for epoch in (batches[:5], batches[5:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(23))
    assert not np.array_equal(np.concatenate(batches[:5]), np.concatenate(batches[5:]))
    again = batch_order(23, 5, 2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    rng = np.random.default_rng(3)
    assert np.array_equal(np.concatenate(batches[:5]), rng.permutation(23))
    assert np.array_equal(np.concatenate(batches[5:]), rng.permutation(23))


def test_batch_order_drops_trailing_singleton_only_when_asked() -> None:
    assert [len(b) for b in batch_order(21, 5, 1, seed=0)] == [5, 5, 5, 5, 1]
    assert [len(b) for b in batch_order(21, 5, 1, seed=0, drop_singleton=True)] == [5] * 4
    assert batch_order(0, 5, 3, seed=0) == []


# ---------------------------------------------------------------- reference loop


@pytest.mark.parametrize("name", ["mlp_bn", "cnn"])
def test_loop_is_bit_exact_and_independent_of_other_devices(name: str) -> None:
    model, state = build(name)
    x, y = data(MODELS[name][1], 400)
    jobs = jobs_of([60, 45, 33, 80])
    opt = LocalSGD(lr=0.1, local_epochs=1, batch_size=10)
    first = train_loop(model, state, x, y, jobs, opt)
    second = train_loop(model, state, x, y, jobs, opt)
    alone = train_loop(model, state, x, y, [jobs[2]], opt)
    reordered = train_loop(model, state, x, y, jobs[::-1], opt)
    for a, b in zip(first, second, strict=True):
        assert bit_equal(a.state, b.state) and a.mean_loss == b.mean_loss
    assert bit_equal(first[2].state, alone[0].state)
    assert all(bit_equal(a.state, b.state) for a, b in zip(first, reordered[::-1], strict=True))
    assert [r.device_id for r in first] == [j.device_id for j in jobs]


def test_loop_does_not_modify_global_state() -> None:
    model, state = build("mlp_bn")
    before = {k: v.clone() for k, v in state.items()}
    x, y = data((784,), 100)
    train_loop(model, state, x, y, jobs_of([50, 50]), LocalSGD(0.1, 1, 10))
    assert bit_equal(state, before)


# ---------------------------------------------------------------- vectorised vs loop


@pytest.mark.parametrize("name", ["mlp_bn", "mlp", "cnn"])
def test_vectorized_matches_loop_with_unequal_devices(name: str) -> None:
    model, state = build(name)
    x, y = data(MODELS[name][1], 600)
    # Unequal sizes: full batches only, partial last batches, a trailing singleton (dropped
    # with BatchNorm), several devices sharing a signature, a device without data.
    sizes = [60, 60, 47, 60, 41, 33, 60, 0, 19]
    jobs = jobs_of(sizes)
    opt = LocalSGD(lr=0.1, local_epochs=1, batch_size=20)
    ref = train_loop(model, state, x, y, jobs, opt)
    vec = train_vectorized(model, state, x, y, jobs, opt)
    assert [r.device_id for r in vec] == [j.device_id for j in jobs]
    for a, b in zip(ref, vec, strict=True):
        assert (a.num_samples, a.num_steps) == (b.num_samples, b.num_steps)
        assert a.state.keys() == b.state.keys()
        for k in a.state:
            assert a.state[k].dtype == b.state[k].dtype and a.state[k].shape == b.state[k].shape
            if a.state[k].dtype == torch.int64:
                assert torch.equal(a.state[k], b.state[k]), k
            else:
                assert torch.allclose(a.state[k], b.state[k], atol=ATOL, rtol=RTOL), k
        if a.num_steps:
            assert b.mean_loss == pytest.approx(a.mean_loss, rel=1e-5)
        else:
            assert math.isnan(a.mean_loss) and math.isnan(b.mean_loss)
            assert bit_equal(b.state, state)
    if name != "mlp":
        assert ref[4].num_steps == 2  # 41 = 20 + 20 + 1: the singleton batch is dropped
        tracked = [k for k in state if k.endswith("num_batches_tracked")]
        assert all(int(vec[0].state[k]) == 3 for k in tracked)


@pytest.mark.parametrize("name", ["mlp_bn", "mlp"])
def test_fused_and_vmap_backends_agree(name: str) -> None:
    model, state = build(name)
    x, y = data((784,), 240)
    jobs = jobs_of([60, 60, 47, 60])
    opt = LocalSGD(lr=0.1, local_epochs=1, batch_size=20)
    fused = train_vectorized(model, state, x, y, jobs, opt, backend="fused")
    vm = train_vectorized(model, state, x, y, jobs, opt, backend="vmap")
    for a, b in zip(fused, vm, strict=True):
        for k in a.state:
            assert torch.allclose(a.state[k].double(), b.state[k].double(), atol=ATOL, rtol=RTOL)


def test_fused_plan_recognises_mlp_chains_only() -> None:
    assert _fused_plan(mlp_bn()) is not None
    assert _fused_plan(TwoNN()) is not None
    assert _fused_plan(small_cnn()) is None
    with pytest.raises(ValueError):
        model, state = build("cnn")
        x, y = data((1, 12, 12), 20)
        train_vectorized(model, state, x, y, jobs_of([20]), LocalSGD(0.1, 1, 10), backend="fused")


def test_custom_module_2nn_uses_fused_path_and_matches_loop() -> None:
    with torch.random.fork_rng():
        torch.random.manual_seed(0)
        model = TwoNN()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data((784,), 120)
    jobs = jobs_of([60, 60])
    opt = LocalSGD(0.1, 1, 20)
    for a, b in zip(
        train_loop(model, state, x, y, jobs, opt),
        train_vectorized(model, state, x, y, jobs, opt, backend="fused"),
        strict=True,
    ):
        for k in a.state:
            assert torch.allclose(a.state[k], b.state[k], atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- grouping independence


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", ["mlp_bn", "cnn"])
def test_vectorized_is_bit_identical_alone_or_in_a_group_of_50(
    name: str,
    num_threads: int,
    threads: Callable[[int], None],
) -> None:
    threads(num_threads)
    model, state = build(name)
    x, y = data(MODELS[name][1], 2000)
    jobs = jobs_of([40] * 50)
    opt = LocalSGD(lr=0.1, local_epochs=1, batch_size=20)
    group = train_vectorized(model, state, x, y, jobs, opt)
    for pick in (0, 17, 49):
        alone = train_vectorized(model, state, x, y, [jobs[pick]], opt)
        assert bit_equal(group[pick].state, alone[0].state)
        assert group[pick].mean_loss == alone[0].mean_loss
    shuffled = train_vectorized(model, state, x, y, jobs[::-1], opt, group_size=7)
    assert all(bit_equal(a.state, b.state) for a, b in zip(group, shuffled[::-1], strict=True))


# ---------------------------------------------------------------- learning


def separable(n: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = centers[y] + 0.5 * torch.randn(n, 784, generator=g)
    return x, y


@pytest.mark.parametrize("trainer", [train_loop, train_vectorized])
@pytest.mark.parametrize("name", ["mlp_bn", "mlp"])
def test_training_learns_a_separable_problem(name: str, trainer: Callable[..., list]) -> None:
    model, state = build(name)
    x, y = separable(300)
    jobs = jobs_of([100, 100, 100])
    results = trainer(model, state, x, y, jobs, LocalSGD(lr=0.05, local_epochs=3, batch_size=10))
    model.eval()
    for job, res in zip(jobs, results, strict=True):
        xb, yb = x[torch.from_numpy(job.train_idx)], y[torch.from_numpy(job.train_idx)]
        with torch.no_grad():
            before = nn.functional.cross_entropy(functional_call(model, state, (xb,)), yb)
            after = nn.functional.cross_entropy(functional_call(model, res.state, (xb,)), yb)
        assert float(after) < 0.2 * float(before)
        assert res.num_steps == 30 and math.isfinite(res.mean_loss)


def test_auto_vectorizes_mlp_chains_only() -> None:
    from fedsim.runtime.lock_step import can_fuse, resolve_vectorize

    assert can_fuse(mlp()) and can_fuse(mlp_bn()) and not can_fuse(small_cnn())
    assert resolve_vectorize("auto", mlp()) is True
    assert resolve_vectorize("auto", small_cnn()) is False
    assert resolve_vectorize(True, small_cnn()) is True
    assert resolve_vectorize(False, mlp()) is False


def test_lock_step_computes_the_loops_function_on_mnist_with_batchnorm() -> None:
    # The shipped MNIST setting (mtfl_2nn with BatchNorm after a ReLU, lr 0.3, B 20, one
    # epoch of 300 samples): in float64 the fused lock-step path and the per-device loop
    # agree to about 1e-9, tested at 1e-8 (the same function). In float32 they drift apart
    # by up to ~1e-2 over the epoch: a channel the ReLU leaves almost constant over a
    # 20-sample batch has a batch std near 4e-3, so BatchNorm multiplies rounding
    # differences by ~250 (see the issue 20 note), and lr 0.3 compounds them.
    from helpers import shared_data_dir

    from fedsim.data import load_dataset
    from fedsim.models import build_model

    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    ds = load_dataset("mnist", data, 1)
    x = torch.as_tensor(ds.x_train[:2400]).double()
    y = torch.as_tensor(ds.y_train[:2400]).long()
    torch.manual_seed(0)
    model = build_model("mtfl_2nn", ds.input_shape, 10).double()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    jobs = [DeviceJob(d, np.arange(d * 300, d * 300 + 300, dtype=np.int64), 100 + d)
            for d in range(8)]  # fmt: skip
    opt = LocalSGD(0.3, 1, 20)
    loop = train_loop(model, base, x, y, jobs, opt)
    lock = train_vectorized(model, base, x, y, jobs, opt, backend="fused")
    for a, b in zip(loop, lock, strict=True):
        for k in base:
            assert torch.allclose(a.state[k], b.state[k], rtol=1e-8, atol=1e-8), k


def test_lock_step_agrees_with_the_loop_to_rounding_per_step_on_mnist_with_batchnorm() -> None:
    # Issue 20's first item, at the shipped setting (mtfl_2nn: BatchNorm after a ReLU; lr 0.3;
    # B 20), float32, 40 devices from one model, one SGD step each. Per tensor (running
    # statistics included), the lock-step result differs from the loop's by at most ~5e-5 of
    # the step (measured), and by no more than the loop differs from itself when torch runs
    # on another number of threads (MKL blocks its GEMMs differently). Over more steps both
    # differences grow about 60-fold a step (chaotic training: a channel the ReLU leaves
    # nearly constant has a batch std near 4e-3, which BatchNorm divides by), reaching O(1)
    # after an epoch -- for lock-step against the loop as for the loop against itself.
    from helpers import on_one_and_two_threads, shared_data_dir, step_offset

    from fedsim.data import load_dataset
    from fedsim.models import build_model

    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    ds = load_dataset("mnist", data, 1)
    n = 40
    x = torch.as_tensor(ds.x_train[: n * 20])
    y = torch.as_tensor(ds.y_train[: n * 20]).long()
    torch.manual_seed(0)
    model = build_model("mtfl_2nn", ds.input_shape, 10)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    jobs = [DeviceJob(d, np.arange(d * 20, d * 20 + 20, dtype=np.int64), 100 + d)
            for d in range(n)]  # fmt: skip
    opt = LocalSGD(0.3, 1, 20)
    loop, lock, loop_2 = on_one_and_two_threads(
        lambda: train_loop(model, base, x, y, jobs, opt),
        lambda: train_vectorized(model, base, x, y, jobs, opt, backend="fused"),
    )

    def off(a, b, k):
        return step_offset(a, b, base, k)

    for k, v in base.items():
        if not v.is_floating_point():
            same = (torch.equal(p.state[k], q.state[k]) for p, q in zip(loop, lock, strict=True))
            assert all(same), k
            continue
        assert off(loop, lock, k) <= 1e-4, k
        assert off(loop, lock, k) <= max(2 * off(loop, loop_2, k), 1e-5), k
