"""MTFL's private patches: what stays on a device never leaves it, shrinks the bytes by
exactly its size, persists in the device's host, and is the same on every runtime."""

import pytest
import torch
from helpers import REPO, cut_and_resume, run_on_ray, same_files, shared_data_dir, watch_uploads

from fedsim.api import run
from fedsim.config import load_scenario

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
# 20 devices, 10 a round on MNIST with the BatchNorm 2NN
SMALL = (
    "topology.edges.0.devices.0.count=10", "topology.edges.0.devices.1.count=10",
    "stop.max_rounds=4", "stop.target_accuracy=null", "checkpoint.every_rounds=2",
)  # fmt: skip
BN_BYTES = {"gamma_beta": 2 * 200 * 4, "mu_sigma": 2 * 200 * 4, "all": 4 * 200 * 4}


pytestmark = pytest.mark.usefixtures("mnist_env")


def _scenario(private, *extra):
    return load_scenario(MNIST, [*SMALL, f"algorithm.params.private={private}", *extra])


def test_private_none_is_plain_fedavg(tmp_path):
    plain = run(load_scenario(MNIST, list(SMALL)), tmp_path / "fl")
    none = run(_scenario("none"), tmp_path / "none")
    same_files(plain.path, none.path, FILES)


@pytest.mark.parametrize("private", ["gamma_beta", "mu_sigma", "all"])
def test_private_values_never_leave_and_shrink_every_upload_by_their_size(
    tmp_path, monkeypatch, private
):
    # Arrange: watch every payload an edge reads and every model it sends to the cloud
    seen = watch_uploads(monkeypatch)

    # Act
    fl = run(load_scenario(MNIST, list(SMALL)), tmp_path / "fl")
    seen.clear()
    mtfl = run(_scenario(private), tmp_path / private)

    # Assert: no BatchNorm value of the private kind in any upload
    kept = {"gamma_beta": ("weight", "bias"), "mu_sigma": ("running_mean", "running_var"),
            "all": ("weight", "bias", "running_mean", "running_var")}[private]  # fmt: skip
    private_keys = {f"2.{k}" for k in kept}
    assert seen and all(not (keys & private_keys) for keys in seen)
    # the same devices report (no time-outs here): each upload smaller by exactly the values
    a, b = fl.device_rounds, mtfl.device_rounds
    assert list(a["device_id"]) == list(b["device_id"])
    done = a["status"] == "completed"
    assert ((a["bytes_up"] - b["bytes_up"])[done] == BN_BYTES[private]).all()
    assert ((a["bytes_down"] - b["bytes_down"])[done] == BN_BYTES[private]).all()


def test_a_device_starts_from_its_own_private_values(tmp_path):
    from fedsim.data import load_dataset
    from fedsim.prepare import check, device_partitions
    from fedsim.runtime.base import LearningSetup
    from fedsim.runtime.device_host import DeviceHost
    from fedsim.runtime.training import DeviceJob, LocalSGD, train_loop
    from fedsim.seeding import Purpose, int_seed

    # Arrange: a host of the MNIST scenario's devices, gamma_beta private, the loop
    prep = check(_scenario("gamma_beta", "runtime.vectorize=false"), "mnist_2nn.yaml")
    parts = device_partitions(prep)
    sc = prep.scenario
    setup = LearningSetup(sc.seed, sc.model, prep.dataset, tuple(parts), sc.algorithm, 1,
                          vectorize=False)  # fmt: skip
    host = DeviceHost(0, setup, dict(enumerate(parts)))
    torch.manual_seed(0)
    model = host._model
    base = {k: v.clone() for k, v in model.state_dict().items()}

    # Act: device 3 trains in round 0 (used), then in round 1 (not used: dropped)
    first = host.train(base, 0, [3])[0]
    host.private.resolve([(3, 0)], [])
    second = host.train(base, 1, [3])[0]
    host.private.resolve([], [(3, 1)])

    # Assert: round 1 started from the global model patched with round 0's gamma, beta
    assert set(first.private) == {"2.weight", "2.bias"}
    ds = load_dataset("mnist", shared_data_dir(), sc.seed)
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train).long()
    job = DeviceJob(3, parts[3].train_idx, int_seed(sc.seed, Purpose.TRAIN, 3, 1))
    ref = train_loop(model, {**base, **first.private}, x, y, [job], LocalSGD(0.3, 1, 20))[0]
    for k, v in second.payload.items():
        assert torch.equal(v, ref.state[k]), k
    assert torch.equal(host.private.own[3]["2.weight"], first.private["2.weight"])  # kept


def test_private_runs_resume_byte_identical(tmp_path):
    sc = _scenario("gamma_beta")
    ref = run(sc, tmp_path / "ref")
    res = cut_and_resume(sc, tmp_path / "cut", 2)  # private values came from the checkpoint
    same_files(ref.path, res.path, FILES)


@pytest.mark.ray
@pytest.mark.parametrize(
    "extra",
    # synchronous with noisy clients (their own copies of their rows, per host), async
    [("data.noise={fraction: 0.2, std: 3.0}",), ("rounds={kind: async, concurrency: 6}",)],
    ids=["sync_noisy", "async"],
)
def test_private_runs_are_byte_identical_inline_and_on_ray(tmp_path, extra):
    ref = run(_scenario("gamma_beta", *extra), tmp_path / "inline")
    sc = _scenario("gamma_beta", *extra, "runtime.kind=ray", "runtime.workers=2")
    same_files(ref.path, run_on_ray(sc, tmp_path / "ray").path, FILES)
