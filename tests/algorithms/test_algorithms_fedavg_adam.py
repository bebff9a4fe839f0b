"""FedAvg-Adam: devices' Adam is torch's, servers average models and moments (by hand), the
bytes are about 3 × FedAvg's, private patches keep their moments, lock-step = loop on MNIST
with BatchNorm, and whole runs are the same inline, on Ray and after a resume."""

import numpy as np
import pytest
import torch
from helpers import (
    REPO,
    cut_and_resume,
    on_one_and_two_threads,
    run_on_ray,
    same_files,
    shared_data_dir,
    step_offset,
    watch_uploads,
)
from torch import nn

from fedsim.algorithms.base import DeviceTask, build_algorithm
from fedsim.api import run
from fedsim.config import AlgorithmSpec, load_scenario
from fedsim.runtime.lock_step import train_vectorized
from fedsim.runtime.optim import STEP_KEY, LocalAdam, moment_keys
from fedsim.runtime.training import DeviceJob, train_loop

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
# 20 devices, 10 a round on MNIST with the BatchNorm 2NN
SMALL = (
    "topology.edges.0.devices.0.count=10", "topology.edges.0.devices.1.count=10",
    "stop.max_rounds=4", "stop.target_accuracy=null", "checkpoint.every_rounds=2",
)  # fmt: skip
ADAM = ("algorithm.use=fedavg_adam", "algorithm.params.lr=0.003")


def _mnist() -> None:
    if not (shared_data_dir() / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {shared_data_dir()}")


@pytest.fixture
def mnist(monkeypatch):
    _mnist()
    monkeypatch.setenv("FEDSIM_DATA", str(shared_data_dir()))


def _adam(**params):
    return build_algorithm(AlgorithmSpec(use="fedavg_adam", params=params))


def test_device_adam_is_torchs_fused_adam_bit_for_bit():
    # Arrange: a small MLP, 3 steps of batch 4 on random data, torch's own Adam beside ours
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    opt = LocalAdam(lr=0.01, local_epochs=1, batch_size=4, beta1=0.8, beta2=0.99, eps=1e-6)
    job = DeviceJob(0, np.arange(12, dtype=np.int64), seed=7)

    # Act
    ours = train_loop(model, base, x, y, [job], opt)[0]
    ref = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    ref.load_state_dict(base)
    torch_adam = torch.optim.Adam(
        ref.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, fused=True
    )
    from fedsim.runtime.training import batch_order

    for b in batch_order(12, 4, 1, 7):
        torch_adam.zero_grad()
        nn.functional.cross_entropy(ref(x[b]), y[b]).backward()
        torch_adam.step()

    # Assert: the same weights and moments, step count 3
    for name, p in ref.named_parameters():
        m, v = moment_keys(name)
        assert torch.equal(ours.state[name], p.detach()), name
        assert torch.equal(ours.state[m], torch_adam.state[p]["exp_avg"]), m
        assert torch.equal(ours.state[v], torch_adam.state[p]["exp_avg_sq"]), v
    assert float(ours.state[STEP_KEY]) == 3.0


def test_servers_average_models_and_moments_as_computed_by_hand():
    # Arrange: w (1 weight, no bias), x = 1, loss = cross-entropy over 2 classes with
    # logits (w·x, 0): the gradient of one sample of class 0 is sigmoid(w) - 1.
    algo = _adam(lr=0.1, beta1=0.5, beta2=0.75, eps=1e-12, batch_size=1)  # ε negligible
    model = nn.Sequential(nn.Linear(1, 2, bias=False))
    algo.bind(model)
    w0 = torch.tensor([[0.0], [0.0]])
    state = algo.initial_state(model) | {"0.weight": w0}
    x, y = torch.ones(3, 1), torch.tensor([0, 0, 1])
    tasks = [DeviceTask(0, np.array([0]), seed=1), DeviceTask(1, np.array([1, 2]), seed=2)]

    # Act: device 0 takes one step on (x, 0); device 1 two steps on (x, 0) and (x, 1)
    ups = algo.train(model, state, x, y, tasks, vectorize=False)
    agg = algo.aggregate(state, [1.0, 2.0], (u.payload for u in ups))

    # Assert: by hand. At w = 0 both logits are 0: p = (1/2, 1/2), so the gradient of
    # the weight row of the true class is -1/2 and of the other +1/2.
    g1 = torch.tensor([[-0.5], [0.5]])  # a class-0 sample at w = 0
    m1, v1 = 0.5 * g1, 0.25 * g1 * g1  # (1 - β1) g, (1 - β2) g²
    # bias-corrected step t = 1: m/(1 - β1) / sqrt(v/(1 - β2)) = sign(g)
    w_dev0 = w0 - 0.1 * torch.sign(g1)
    # device 1, second step at w_dev0 on a class-1 sample
    logits = w_dev0[:, 0]
    p = torch.softmax(logits, 0)
    g2 = (p - torch.tensor([0.0, 1.0])).unsqueeze(1)
    m2, v2 = 0.5 * m1 + 0.5 * g2, 0.75 * v1 + 0.25 * g2 * g2
    w_dev1 = w_dev0 - 0.1 / (1 - 0.25) * m2 / (v2 / (1 - 0.75**2)).sqrt()
    m_key, v_key = moment_keys("0.weight")
    expect = {
        "0.weight": (w_dev0 + 2 * w_dev1) / 3,
        m_key: (m1 + 2 * m2) / 3,
        v_key: (v1 + 2 * v2) / 3,
        STEP_KEY: torch.tensor((1 + 2 * 2) / 3, dtype=torch.float64),
    }
    assert set(ups[0].payload) == set(expect)
    for k, v in expect.items():
        assert torch.allclose(agg.state[k].double(), v.double(), atol=1e-7), k
    assert agg.state[STEP_KEY].dtype == torch.float64


def test_private_parameters_keep_their_moments_on_the_device():
    algo = _adam(private="gamma_beta")
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 2))
    algo.bind(model)
    state = algo.initial_state(model)
    kept = {f"2.{k}" for k in ("weight", "bias")}
    kept |= {k for n in ("2.weight", "2.bias") for k in moment_keys(n)}
    assert algo.private == kept
    floats = {k for k, v in state.items() if v.is_floating_point()}  # no batch counter
    assert set(algo.payload_keys(state)) == floats - kept
    assert STEP_KEY in algo.payload_keys(state)  # one count per device, averaged


def test_payload_is_three_times_fedavgs_and_mtfl_drops_exactly_its_values(tmp_path, mnist):
    # Arrange: mtfl_2nn has 784·200+200 + 200·200+200 + 200·10+10 weights and biases, a BN
    # of 200 (γ, β trained; μ, σ² buffers; its integer batch counter is not uploaded)
    weights = 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10 + 2 * 200
    fedavg = 4 * (weights + 2 * 200)
    adam = fedavg + 2 * 4 * weights + 8  # m and v per weight, a float64 step count

    # Act
    fl = run(load_scenario(MNIST, [*SMALL, "stop.max_rounds=1"]), tmp_path / "fl")
    fl_adam = run(load_scenario(MNIST, [*SMALL, *ADAM, "stop.max_rounds=1"]), tmp_path / "a")
    mtfl = load_scenario(MNIST, [*SMALL, *ADAM, "stop.max_rounds=1",
                                 "algorithm.params.private=gamma_beta"])  # fmt: skip
    mtfl_adam = run(mtfl, tmp_path / "m")

    # Assert
    done = fl.device_rounds["status"] == "completed"
    assert (fl.device_rounds["bytes_up"][done] == fedavg).all()
    assert (fl_adam.device_rounds["bytes_up"][done] == adam).all()
    assert adam / fedavg == pytest.approx(3.0, abs=0.01)
    # γ, β and their two moments: 3 × 2 × 200 float32 values
    assert (mtfl_adam.device_rounds["bytes_up"][done] == adam - 3 * 2 * 200 * 4).all()


def test_private_moments_never_leave_the_device(tmp_path, monkeypatch, mnist):
    seen = watch_uploads(monkeypatch)
    sc = load_scenario(MNIST, [*SMALL, *ADAM, "stop.max_rounds=2",
                               "algorithm.params.private=gamma_beta"])  # fmt: skip
    run(sc, tmp_path / "run")
    private = {"2.weight", "2.bias"} | {k for n in ("2.weight", "2.bias") for k in moment_keys(n)}
    assert seen and all(not (keys & private) for keys in seen)
    assert all(moment_keys("0.weight")[1] in keys for keys in seen)


# ---------------------------------------------------------------- lock-step = loop


def _mnist_jobs(devices: int, samples: int, dtype: torch.dtype):
    _mnist()
    from fedsim.data import load_dataset
    from fedsim.models import build_model

    ds = load_dataset("mnist", shared_data_dir(), 1)
    x = torch.as_tensor(ds.x_train[: devices * samples]).to(dtype)
    y = torch.as_tensor(ds.y_train[: devices * samples]).long()
    torch.manual_seed(0)
    model = build_model("mtfl_2nn", ds.input_shape, 10).to(dtype)
    algo = _adam()
    base = algo.initial_state(model)
    jobs = [DeviceJob(d, np.arange(d * samples, (d + 1) * samples, dtype=np.int64), 100 + d)
            for d in range(devices)]  # fmt: skip
    return model, base, x, y, jobs


@pytest.mark.parametrize("backend", ["fused", "vmap"])
def test_lock_step_adam_equals_the_loop_in_float64_over_an_epoch_on_mnist(backend):
    # The shipped setting (mtfl_2nn with BatchNorm, B 20, a 300-sample epoch) at Adam's
    # lr 0.003; in float64 the paths compute the same function, so rounding stays ~1e-12.
    model, base, x, y, jobs = _mnist_jobs(6, 300, torch.float64)
    opt = LocalAdam(0.003, 1, 20)
    loop = train_loop(model, base, x, y, jobs, opt)
    lock = train_vectorized(model, base, x, y, jobs, opt, backend=backend)
    for a, b in zip(loop, lock, strict=True):
        assert set(a.state) == set(base)
        for k in base:
            assert torch.allclose(a.state[k], b.state[k], rtol=1e-8, atol=1e-9), k


def test_lock_step_adam_agrees_with_the_loop_per_step_in_float32_on_mnist():
    # float32, 40 devices, one Adam step from zero moments (an update of about lr·sign(g)):
    # the moments agree to ~1e-6 of their size (measured), the weights no worse than the
    # loop agrees with itself on another number of torch threads -- where a gradient is at
    # rounding level its sign, and so its whole step, is rounding (measured: up to 0.1 of
    # the step, and 0.24 between 1 and 2 threads).
    model, base, x, y, jobs = _mnist_jobs(40, 20, torch.float32)
    opt = LocalAdam(0.003, 1, 20)
    loop, lock, loop_2 = on_one_and_two_threads(
        lambda: train_loop(model, base, x, y, jobs, opt),
        lambda: train_vectorized(model, base, x, y, jobs, opt, backend="fused"),
    )

    def off(a, b, k):
        return step_offset(a, b, base, k)

    for k, v in base.items():
        if not v.is_floating_point() or k == STEP_KEY:
            assert all(
                torch.equal(p.state[k], q.state[k]) for p, q in zip(loop, lock, strict=True)
            ), k
        elif k.startswith("optim/"):
            assert off(loop, lock, k) <= 1e-5, k
        else:
            assert off(loop, lock, k) <= max(2 * off(loop, loop_2, k), 1e-5), k


# ---------------------------------------------------------------- whole runs


def test_fedavg_adam_mtfl_run_resumes_byte_identical(tmp_path, mnist):
    sc = load_scenario(MNIST, [*SMALL, *ADAM, "algorithm.params.private=gamma_beta"])
    ref = run(sc, tmp_path / "ref")
    assert ref.rounds["ua_mean"].iloc[-1] > ref.rounds["ua_mean"].iloc[0] + 0.1  # it learns
    res = cut_and_resume(sc, tmp_path / "cut", 2)  # moments, private ones too, came back
    same_files(ref.path, res.path, FILES)


@pytest.mark.ray
@pytest.mark.parametrize("extra", [(), ("rounds={kind: async, concurrency: 6}",)],
                         ids=["sync", "async"])  # fmt: skip
def test_fedavg_adam_runs_are_byte_identical_inline_and_on_ray(tmp_path, mnist, extra):
    opts = [*SMALL, *ADAM, "algorithm.params.private=gamma_beta", *extra]
    ref = run(load_scenario(MNIST, opts), tmp_path / "inline")
    sc = load_scenario(MNIST, [*opts, "runtime.kind=ray", "runtime.workers=2"])
    same_files(ref.path, run_on_ray(sc, tmp_path / "ray").path, FILES)
