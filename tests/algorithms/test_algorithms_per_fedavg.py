"""Per-FedAvg: its steps by hand, the clock's charge, lock-step against the loop on MNIST,
and whole runs (same seed twice, inline = Ray)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
from fedsim.runtime.meta_training import train_lock_step, train_loop
from fedsim.runtime.training import DeviceJob, batch_order

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
# MTFL's MNIST setting (W = 200, B = 20, E = 1), 10 devices a round, 3 rounds
SMALL = (
    "rounds.participation=null", "rounds.participants=10", "stop.max_rounds=3",
    "stop.target_accuracy=null",
)  # fmt: skip
PER_FEDAVG = "algorithm={use: per_fedavg, params: {alpha: 0.1, beta: 0.3}}"


def _algo(**params):
    return build_algorithm(AlgorithmSpec(use="per_fedavg", params=params))


def _hessian_times(w, b, x, y, v):
    """The full Hessian (6 x 6, by autograd) of the batch loss at (w, b) times v = (vw, vb)."""

    def loss(flat):
        return F.cross_entropy(x @ flat[:6].view(2, 3).T + flat[6:], y)

    hess = torch.autograd.functional.hessian(loss, torch.cat([w.flatten(), b]))
    hv = hess @ torch.cat([v[0].flatten(), v[1]])
    return hv[:6].view(2, 3), hv[6:]


@pytest.mark.parametrize("vectorize", [False, True], ids=["loop", "lock-step"])
@pytest.mark.parametrize("variant", ["first_order", "hessian_free", "finite_difference"])
def test_two_steps_equal_a_hand_computation(vectorize, variant):
    # Arrange: α 0.1, β 0.3; n 4, B 2, E 1: K = 2 steps of 2 (or 3) batches
    model, base, x, y, idx = linear_device()
    params = {"alpha": 0.1, "beta": 0.3, "batch_size": 2}
    if variant != "first_order":
        params["variant"] = "hessian_free"
    if variant == "finite_difference":
        params["delta"] = 1e-4
    algo = _algo(**params)
    m = 2 if variant == "first_order" else 3

    # Act
    (update,) = algo.train(model, base, x, y, [DeviceTask(7, idx, 11)], vectorize)

    # Assert: the batch stream is m permutations of the device's rows, 2 batches each
    batches = [idx[b] for b in batch_order(4, 2, m, 11)]
    w, b = base["weight"], base["bias"]
    for k in range(2):
        d1, d2 = batches[m * k], batches[m * k + 1]
        g1 = linear_grad(w, b, x[d1], y[d1])
        g = linear_grad(w - 0.1 * g1[0], b - 0.1 * g1[1], x[d2], y[d2])
        if m == 3:
            d3 = batches[m * k + 2]
            hv = _hessian_times(w, b, x[d3], y[d3], g)
            g = (g[0] - 0.1 * hv[0], g[1] - 0.1 * hv[1])
        w, b = w - 0.3 * g[0], b - 0.3 * g[1]
    tol = 1e-7 if variant == "finite_difference" else 1e-12  # O(δ²) and rounding / δ
    assert torch.allclose(update.payload["weight"], w, rtol=0, atol=tol)
    assert torch.allclose(update.payload["bias"], b, rtol=0, atol=tol)
    assert not torch.equal(w, base["weight"])
    assert update.num_samples == 4 and set(update.payload) == {"weight", "bias"}


def test_the_user_model_is_one_sgd_step_of_alpha_on_a_seeded_batch():
    model, base, x, y, idx = linear_device()
    algo = _algo(alpha=0.1, batch_size=3)
    user = algo.personalise(model, base, x, y, idx, 5)
    rows = idx[batch_order(4, 3, 1, 5)[0]]  # the first batch of a fresh permutation
    g = linear_grad(base["weight"], base["bias"], x[rows], y[rows])
    assert torch.allclose(user["weight"], base["weight"] - 0.1 * g[0], rtol=0, atol=1e-15)
    assert torch.allclose(user["bias"], base["bias"] - 0.1 * g[1], rtol=0, atol=1e-15)
    again = algo.personalise(model, base, x, y, idx, 5)
    assert all(torch.equal(user[k], again[k]) for k in user)  # seeded
    other = algo.personalise(model, base, x, y, idx, 6)
    assert not torch.equal(user["weight"], other["weight"])  # another evaluation, another batch


def test_the_clock_charges_every_batch_gradient():
    # n 45, B 20: FedAvg takes batches of 20, 20, 5 (K = 3 steps)
    fo = _algo(batch_size=20)
    assert fo.steps(45) == [20, 20, 5, 20, 20, 5]  # D1 and D2 of each step
    hf = _algo(batch_size=20, variant="hessian_free")
    # D1, D2, D3 of each step and D3 again: the Hessian-vector product costs two gradients
    assert hf.steps(45) == [20, 20, 5, 5] * 3
    for algo in (fo, hf):
        for n in (0, 1, 19, 20, 45, 401):
            assert algo.num_steps(n) == len(algo.steps(n))
            assert algo.largest_batch(n) == max(algo.steps(n), default=1)


def _mnist(rows):
    from fedsim.data import load_dataset

    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    ds = load_dataset("mnist", data, 1)
    return ds, torch.as_tensor(ds.x_train[:rows]), torch.as_tensor(ds.y_train[:rows]).long()


@pytest.mark.parametrize("hessian_free", [False, True], ids=["first_order", "hessian_free"])
def test_lock_step_agrees_with_the_loop_to_rounding_per_step_on_mnist_with_batchnorm(
    hessian_free,
):
    # As FedAvg's test of the same name (tests/runtime): the shipped 2NN (BatchNorm after a
    # ReLU), float32, 40 devices of 20 samples, one Per-FedAvg step each (B 20). Per tensor,
    # running statistics included, lock-step is off the loop by at most ~7e-5 of the step
    # (measured), and by no more than the loop is off itself on another thread count.
    from fedsim.algorithms.per_fedavg import PerFedAvgStep
    from fedsim.models import build_model

    n = 40
    ds, x, y = _mnist(n * 20)
    torch.manual_seed(0)
    model = build_model("mtfl_2nn", ds.input_shape, 10)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    jobs = [DeviceJob(d, np.arange(d * 20, d * 20 + 20, dtype=np.int64), 100 + d)
            for d in range(n)]  # fmt: skip
    rule = PerFedAvgStep(0.1, 0.3, hessian_free)
    loop, lock, loop_2 = on_one_and_two_threads(
        lambda: train_loop(model, base, x, y, jobs, rule, 20, 1),
        lambda: train_lock_step(model, base, x, y, jobs, rule, 20, 1),
    )

    def off(a, b, k):
        return step_offset(a, b, base, k)

    for k, v in base.items():
        if not v.is_floating_point():
            # every gradient is a train-mode forward pass: 2 (or 3) running-stat updates
            assert all(int(r.state[k]) == rule.batches_per_step for r in lock), k
            pairs = zip(loop, lock, strict=True)
            assert all(torch.equal(p.state[k], q.state[k]) for p, q in pairs), k
            continue
        assert off(loop, lock, k) <= 1e-3, k
        assert off(loop, lock, k) <= max(2 * off(loop, loop_2, k), 1e-5), k
    assert all(abs(p.mean_loss - q.mean_loss) < 1e-5 for p, q in zip(loop, lock, strict=True))


def test_lock_step_agrees_with_the_loop_over_an_epoch_in_float64():
    # Hessian-free (exact product), 4 devices of 100 samples (5 steps, 15 batches each) with
    # unequal last batches: lock-step groups by signature, and agrees to float64 rounding.
    from fedsim.algorithms.per_fedavg import PerFedAvgStep
    from fedsim.models import build_model

    ds, x, y = _mnist(400)
    torch.manual_seed(1)
    model = build_model("mtfl_2nn", ds.input_shape, 10).double()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sizes = [100, 100, 90, 87]
    jobs = [DeviceJob(d, np.arange(d * 100, d * 100 + s, dtype=np.int64), d)
            for d, s in enumerate(sizes)]  # fmt: skip
    rule = PerFedAvgStep(0.03, 0.3, True)
    loop = train_loop(model, base, x.double(), y, jobs, rule, 20, 1)
    lock = train_lock_step(model, base, x.double(), y, jobs, rule, 20, 1)
    for p, q in zip(loop, lock, strict=True):
        assert p.num_steps == q.num_steps == 5
        for k in base:
            assert torch.allclose(p.state[k], q.state[k], rtol=1e-9, atol=1e-9), k


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory):
    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    sc = load_scenario(MNIST, [*SMALL, PER_FEDAVG, f"data.dir={data}"])
    return run(sc, tmp_path_factory.mktemp("per_fedavg") / "inline")


def test_a_run_reports_ua_and_is_byte_identical_for_a_seed(inline_run, tmp_path):
    rounds = inline_run.rounds
    assert len(rounds) == 3 and rounds["ua_mean"].notna().all()
    assert (rounds["ua_mean"] > rounds["accuracy"]).all()  # one step to the device's classes
    again = run(load_scenario(MNIST, [*SMALL, PER_FEDAVG, f"data.dir={shared_data_dir()}"]),
                tmp_path / "again")  # fmt: skip
    same_files(inline_run.path, again.path, FILES)


def test_the_clock_charges_twice_fedavg_compute(inline_run, tmp_path):
    # the same devices, rounds and jitter draws: first-order steps are two FedAvg steps each
    sc = load_scenario(MNIST, [*SMALL, f"data.dir={shared_data_dir()}", "stop.max_rounds=1"])
    fedavg = run(sc, tmp_path / "fedavg").device_rounds
    mine = inline_run.device_rounds[inline_run.device_rounds["round"] == 0]
    assert list(mine["device_id"]) == list(fedavg["device_id"])
    assert np.allclose(mine["compute_s"].to_numpy(), 2 * fedavg["compute_s"].to_numpy(), rtol=1e-12)


@pytest.mark.ray
def test_a_run_is_byte_identical_inline_and_on_ray(inline_run, tmp_path):
    sc = load_scenario(MNIST, [*SMALL, PER_FEDAVG, f"data.dir={shared_data_dir()}",
                               "runtime.kind=ray", "runtime.workers=2"])  # fmt: skip
    same_files(inline_run.path, run_on_ray(sc, tmp_path / "ray").path, FILES)
