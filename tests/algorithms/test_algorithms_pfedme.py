"""pFedMe: its local steps, user model and server mixing by hand, the clock's charge, lock-step
against the loop on MNIST, and whole runs (same seed twice, inline = Ray, async refusal)."""

import numpy as np
import pytest
import torch
from helpers import (
    REPO,
    linear_device,
    linear_grad,
    on_one_and_two_threads,
    run_on_ray,
    same_files,
    shared_data_dir,
    step_offset,
)

from fedsim.algorithms.base import DeviceTask, build_algorithm
from fedsim.api import run
from fedsim.config import AlgorithmSpec, load_scenario
from fedsim.errors import InputError
from fedsim.runtime.meta_training import train_lock_step, train_loop
from fedsim.runtime.training import DeviceJob, batch_order

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
# MTFL's MNIST setting (W = 200, B = 20, E = 1), 10 devices a round, 3 rounds
SMALL = (
    "rounds.participation=null", "rounds.participants=10", "stop.max_rounds=3",
    "stop.target_accuracy=null",
)  # fmt: skip
PFEDME = "algorithm={use: pfedme, params: {lr: 0.1, lam: 1.0, inner_steps: 2, beta: 2.0}}"


def _algo(**params):
    return build_algorithm(AlgorithmSpec(use="pfedme", params=params))


def _inner(theta, w, x, y, steps, personal_lr=0.05, lam=2.0):
    """``steps`` gradient steps on f(θ) + λ/2 |θ - w|² from θ (θ and w are (weight, bias))."""
    for _ in range(steps):
        g = linear_grad(*theta, x, y)
        theta = tuple(
            t - personal_lr * (gt + lam * (t - wt)) for t, gt, wt in zip(theta, g, w, strict=True)
        )
    return theta


@pytest.mark.parametrize("vectorize", [False, True], ids=["loop", "lock-step"])
def test_two_steps_equal_a_hand_computation(vectorize):
    # Arrange: η 0.1, λ 2, personal lr 0.05, K = 2 inner steps; n 4, B 2: R = 2 steps
    model, base, x, y, idx = linear_device()
    algo = _algo(lr=0.1, lam=2.0, personal_lr=0.05, inner_steps=2, batch_size=2)

    # Act
    (update,) = algo.train(model, base, x, y, [DeviceTask(7, idx, 11)], vectorize)

    # Assert: θ starts at w and carries over; w moves by η λ (w - θ) after each step
    w = theta = (base["weight"], base["bias"])
    for b in batch_order(4, 2, 1, 11):
        rows = idx[b]
        theta = _inner(theta, w, x[rows], y[rows], 2)
        w = tuple(wt - 0.1 * 2.0 * (wt - t) for wt, t in zip(w, theta, strict=True))
    assert torch.allclose(update.payload["weight"], w[0], rtol=0, atol=1e-14)
    assert torch.allclose(update.payload["bias"], w[1], rtol=0, atol=1e-14)
    assert not torch.equal(w[0], base["weight"])


def test_the_user_model_is_the_inner_solve_from_the_global_model_on_a_seeded_batch():
    model, base, x, y, idx = linear_device()
    algo = _algo(lam=2.0, personal_lr=0.05, inner_steps=3, batch_size=3)
    user = algo.personalise(model, base, x, y, idx, 5)
    rows = idx[batch_order(4, 3, 1, 5)[0]]
    w = (base["weight"], base["bias"])
    theta = _inner(w, w, x[rows], y[rows], 3)
    assert torch.allclose(user["weight"], theta[0], rtol=0, atol=1e-15)
    assert torch.allclose(user["bias"], theta[1], rtol=0, atol=1e-15)
    again = algo.personalise(model, base, x, y, idx, 5)
    assert all(torch.equal(user[k], again[k]) for k in user)  # seeded, no state kept


def test_the_cloud_mixes_the_mean_into_the_global_model_by_beta():
    x = {"w": torch.tensor([1.0, 2.0]), "running_mean": torch.tensor([0.0])}
    mean = {"w": torch.tensor([3.0, 0.0]), "running_mean": torch.tensor([5.0])}
    new, opt = _algo(beta=2.0).server_step(x, mean, {}, ["w"])
    assert new["w"].tolist() == [5.0, -2.0]  # (1 - β) x + β mean
    assert new["running_mean"].tolist() == [5.0] and opt == {}  # buffers take the mean
    same, _ = _algo().server_step(x, mean, {}, ["w"])
    assert same is mean  # β = 1: the plain mean
    assert _algo(beta=2.0).server_optimizer and not _algo().server_optimizer


def test_the_clock_charges_every_inner_gradient():
    algo = _algo(batch_size=20, inner_steps=2, local_epochs=2)
    assert algo.steps(45) == [20, 20, 20, 20, 5, 5] * 2
    for n in (0, 1, 20, 45, 401):
        assert algo.num_steps(n) == len(algo.steps(n))
        assert algo.largest_batch(n) == max(algo.steps(n), default=1)
    assert _algo(batch_size=20).steps(45) == [20, 20, 5]  # K = 1: FedAvg's compute


def _mnist(rows):
    from fedsim.data import load_dataset

    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    ds = load_dataset("mnist", data, 1)
    return ds, torch.as_tensor(ds.x_train[:rows]), torch.as_tensor(ds.y_train[:rows]).long()


def test_lock_step_agrees_with_the_loop_to_rounding_per_step_on_mnist_with_batchnorm():
    # As FedAvg's test of the same name (tests/runtime): the shipped 2NN (BatchNorm after a
    # ReLU), float32, 40 devices of 20 samples, one pFedMe step each (K = 1, B 20). Per
    # tensor, running statistics included, lock-step is off the loop by no more than the
    # loop is off itself on another thread count. (The BatchNorm weight's step, η λ (w - θ),
    # is a small difference of nearly equal values: both are ~4e-4 of it, from w's rounding.)
    from fedsim.algorithms.pfedme import PFedMeStep
    from fedsim.models import build_model

    n = 40
    ds, x, y = _mnist(n * 20)
    torch.manual_seed(0)
    model = build_model("mtfl_2nn", ds.input_shape, 10)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    jobs = [DeviceJob(d, np.arange(d * 20, d * 20 + 20, dtype=np.int64), 100 + d)
            for d in range(n)]  # fmt: skip
    rule = PFedMeStep(0.1, 1.0, 0.1, 1)
    loop, lock, loop_2 = on_one_and_two_threads(
        lambda: train_loop(model, base, x, y, jobs, rule, 20, 1),
        lambda: train_lock_step(model, base, x, y, jobs, rule, 20, 1),
    )

    def off(a, b, k):
        return step_offset(a, b, base, k)

    for k, v in base.items():
        if not v.is_floating_point():
            assert all(int(r.state[k]) == 1 for r in lock), k  # one forward pass of θ
            pairs = zip(loop, lock, strict=True)
            assert all(torch.equal(p.state[k], q.state[k]) for p, q in pairs), k
            continue
        assert off(loop, lock, k) <= 1e-3, k
        assert off(loop, lock, k) <= max(2 * off(loop, loop_2, k), 1e-5), k


def test_lock_step_agrees_with_the_loop_over_an_epoch_in_float64():
    # K = 2 inner steps, 4 devices of 87 to 100 samples (5 steps each): float64 rounding
    from fedsim.algorithms.pfedme import PFedMeStep
    from fedsim.models import build_model

    ds, x, y = _mnist(400)
    torch.manual_seed(1)
    model = build_model("mtfl_2nn", ds.input_shape, 10).double()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sizes = [100, 100, 90, 87]
    jobs = [DeviceJob(d, np.arange(d * 100, d * 100 + s, dtype=np.int64), d)
            for d, s in enumerate(sizes)]  # fmt: skip
    rule = PFedMeStep(0.1, 1.0, 0.1, 2)
    loop = train_loop(model, base, x.double(), y, jobs, rule, 20, 1)
    lock = train_lock_step(model, base, x.double(), y, jobs, rule, 20, 1)
    for p, q in zip(loop, lock, strict=True):
        assert p.num_steps == q.num_steps == 5
        assert int(q.state["2.num_batches_tracked"]) == 10
        for k in base:
            assert torch.allclose(p.state[k], q.state[k], rtol=1e-9, atol=1e-9), k


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory):
    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    sc = load_scenario(MNIST, [*SMALL, PFEDME, f"data.dir={data}"])
    return run(sc, tmp_path_factory.mktemp("pfedme") / "inline")


def test_a_run_reports_ua_and_is_byte_identical_for_a_seed(inline_run, tmp_path):
    rounds = inline_run.rounds
    assert len(rounds) == 3 and rounds["ua_mean"].notna().all()
    assert (rounds["ua_mean"] > rounds["accuracy"]).all()  # θ fits the device's classes
    again = run(load_scenario(MNIST, [*SMALL, PFEDME, f"data.dir={shared_data_dir()}"]),
                tmp_path / "again")  # fmt: skip
    same_files(inline_run.path, again.path, FILES)


@pytest.mark.ray
def test_a_run_is_byte_identical_inline_and_on_ray(inline_run, tmp_path):
    sc = load_scenario(MNIST, [*SMALL, PFEDME, f"data.dir={shared_data_dir()}",
                               "runtime.kind=ray", "runtime.workers=2"])  # fmt: skip
    same_files(inline_run.path, run_on_ray(sc, tmp_path / "ray").path, FILES)


def test_server_mixing_is_refused_for_asynchronous_runs():
    from fedsim.api import check

    mixing = ["algorithm={use: pfedme, params: {beta: 2.0}}", "rounds={kind: async}"]
    with pytest.raises(InputError, match="asynchronous run applies rounds.server"):
        check(load_scenario(QUICKSTART, mixing), "q.yaml")
    check(load_scenario(QUICKSTART, ["algorithm.use=pfedme", "rounds={kind: async}"]), "q.yaml")
