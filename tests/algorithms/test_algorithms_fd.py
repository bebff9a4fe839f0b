"""Federated distillation: devices of two architectures in one run, only class scores travel."""

import json
import re

import numpy as np
import pytest
import torch
from helpers import (
    REPO,
    cut_and_resume,
    run_on_ray,
    same_files,
    shared_data_dir,
    watch_uploads,
)

from fedsim.algorithms.base import build_algorithm
from fedsim.algorithms.fd import CONSENSUS, FederatedDistillation, public_rows
from fedsim.api import run
from fedsim.config import ComponentSpec, load_scenario
from fedsim.data import load_dataset
from fedsim.errors import InputError
from fedsim.models import build_model
from fedsim.prepare import check
from fedsim.sim.availability import Availability
from fedsim.sim.costs import steps_s
from fedsim.sim.inputs import SimulationInputs
from fedsim.sim.planning import RoundPlanner
from fedsim.sim.population import Population

FD = REPO / "scenarios" / "perfit" / "fd.yaml"
SHORT = ("stop.max_rounds=2", "evaluation.every=2")  # round 1 digests round 0's consensus
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv", "data_sharing.csv")
CLASSES = 6  # synthetic_har's activities
PUBLIC = 500


@pytest.fixture(scope="module")
def fd_run(tmp_path_factory):
    """The shipped FD-1 scenario for two rounds, with every payload and training call seen."""
    mp = pytest.MonkeyPatch()
    seen = watch_uploads(mp)
    archs: list[tuple[int, list[int]]] = []
    train = FederatedDistillation.train

    def watch_train(self, model, base, x, y, tasks, vectorize):  # type: ignore[no-untyped-def]
        archs.append((sum(p.numel() for p in model.parameters()), [t.device_id for t in tasks]))
        out = train(self, model, base, x, y, tasks, vectorize)
        payloads.extend(u.payload for u in out)
        return out

    payloads: list[dict[str, torch.Tensor]] = []
    mp.setattr(FederatedDistillation, "train", watch_train)
    try:
        result = run(load_scenario(FD, list(SHORT)), tmp_path_factory.mktemp("fd") / "run")
    finally:
        mp.undo()
    return result, seen, archs, payloads


def test_two_architectures_train_in_one_run(fd_run):
    result, _, archs, _ = fd_run
    sizes = {n for n, _ in archs}
    cnn = build_model("perfit_cnn", (9, 128), CLASSES)
    nn3 = build_model("perfit_3nn", (9, 128), CLASSES)
    assert sizes == {sum(p.numel() for p in m.parameters()) for m in (cnn, nn3)}
    # devices 0-9 and 15-24 run the CNN (FD-1's 20), the others the 3NN
    cnn_ids = set(range(10)) | set(range(15, 25))
    for n, ids in archs:
        assert all((d in cnn_ids) == (n == sum(p.numel() for p in cnn.parameters())) for d in ids)
    meta = json.loads((result.path / "run.json").read_text())["model"]["architectures"]
    assert meta["perfit_cnn"]["devices"] == 20 and meta["perfit_3nn"]["devices"] == 10


def test_each_upload_is_exactly_the_class_scores_and_their_bytes(fd_run):
    result, seen, _, payloads = fd_run
    assert seen and all(keys == {CONSENSUS} for keys in seen)
    assert payloads and all(set(p) == {CONSENSUS} for p in payloads)
    for p in payloads:
        scores = p[CONSENSUS]
        assert scores.shape == (PUBLIC, CLASSES) and scores.dtype == torch.float32
        assert torch.allclose(scores.sum(1), torch.ones(PUBLIC))  # probabilities
    done = result.device_rounds[result.device_rounds["status"] == "completed"]
    assert len(done) == 10
    assert (done["bytes_up"] == PUBLIC * CLASSES * 4).all()
    assert (done["bytes_down"] == PUBLIC * CLASSES * 4).all()
    assert json.loads((result.path / "run.json").read_text())["model"]["upload_bytes"] == 12_000


def test_the_public_set_is_sent_once_and_recorded(fd_run):
    result, *_ = fd_run
    shared = (result.path / "data_sharing.csv").read_text().splitlines()[1:]
    rows = {}
    for line in shared:
        d, r = map(int, line.split(","))
        rows.setdefault(d, set()).add(r)
    assert sorted(rows) == list(range(30)) and all(len(r) == 1000 for r in rows.values())
    assert len({frozenset(r) for r in rows.values()}) == 1  # every device holds the same set
    assert result.summary["shared_bytes_down"] > 0


def test_there_is_no_global_model_and_ua_is_each_devices_own(fd_run):
    result, *_ = fd_run
    last = result.rounds.iloc[-1]
    assert np.isnan(last["accuracy"]) and last["ua_mean"] > 0
    assert result.summary["final_accuracy"] is None
    assert result.summary["final_ua_mean"] == pytest.approx(last["ua_mean"])


def test_compute_time_follows_each_groups_own_model():
    sc = load_scenario(FD, list(SHORT))
    prep = check(sc)
    assert [m.name for m in prep.group_models] == [
        "perfit_cnn", "perfit_3nn", "perfit_cnn", "perfit_3nn",
    ]  # fmt: skip
    samples = np.full(30, 450)
    inputs = SimulationInputs(
        prep.profiles, prep.model, prep.algorithm, prep.payloads, samples,
        group_models=prep.group_models,
    )  # fmt: skip
    pop = Population.from_topology(sc.topology)
    planner = RoundPlanner(sc, inputs, pop, Availability(sc.availability, sc.seed))
    for group, hw in enumerate(["rpi4", "rpi3b", "phone_mid", "phone_low"]):
        model = prep.group_models[group]
        want = steps_s(
            prep.profiles.device(hw), model.name, model.forward_flops_per_sample,
            prep.algorithm.steps(450),
        )  # fmt: skip
        assert planner._steps_s(group, 450) == want
    # the CNN's digest, revisit and scoring cost another time than the 3NN's on one device
    rpi4 = prep.profiles.device("rpi4")
    other = [steps_s(rpi4, m.name, m.forward_flops_per_sample, [20]) for m in prep.group_models[:2]]
    assert other[0] != other[1]


def test_fd_resumes_byte_identical(fd_run, tmp_path):
    """Every device's own model comes back from the checkpoint."""
    ref, *_ = fd_run
    sc = load_scenario(FD, [*SHORT, "checkpoint.every_rounds=1"])
    res = cut_and_resume(sc, tmp_path / "cut", 0)
    same_files(ref.path, res.path, FILES)


@pytest.mark.ray
def test_fd_is_byte_identical_inline_and_on_ray(fd_run, tmp_path):
    ref, *_ = fd_run
    sc = load_scenario(FD, [*SHORT, "runtime.kind=ray", "runtime.workers=2"])
    same_files(ref.path, run_on_ray(sc, tmp_path / "ray").path, FILES)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["data.sharing=null"], "fd needs a public set"),
        (["data.sharing.per_device=500"], "data.sharing.per_device: fd needs every device"),
        (["algorithm.params.public_size=2000"], "algorithm.params.public_size: 2000 rows"),
        (["rounds.cloud_every=2"], "rounds.cloud_every: fd needs 1"),
        (["stop.target_accuracy=0.9"], "stop.target_accuracy: fd has no global model"),
        (["algorithm={use: fedavg}"], "devices[0].model: 'perfit_cnn' differs from the scenario"),
        (["topology.edges.0.devices.0.model=resnet"], "devices[0].model: unknown model 'resnet'"),
    ],
)
def test_settings_fd_cannot_run_are_refused(sets, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check(load_scenario(FD, sets))


@pytest.mark.usefixtures("mnist_env")
def test_digest_moves_a_device_towards_the_consensus_on_mnist():
    """On MNIST with BatchNorm (mtfl_2nn): the digest lowers the loss against the consensus."""
    ds = load_dataset("mnist", shared_data_dir(), 0)
    x = torch.as_tensor(ds.x_train[:400])
    torch.manual_seed(0)
    model = build_model("mtfl_2nn", (784,), 10)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    target = torch.softmax(torch.randn(400, 10) * 3, 1)
    fd = build_algorithm(
        ComponentSpec(use="fd", params={"lr": 0.3, "digest_epochs": 3, "batch_size": 50})
    )
    assert isinstance(fd, FederatedDistillation)

    def loss(state):  # type: ignore[no-untyped-def]
        model.load_state_dict(state)
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model.eval()(x), target))

    after = fd._digest(model, start, x, target, seed=7)
    assert loss(after) < loss(start) - 0.05
    again = fd._digest(model, start, x, target, seed=7)
    assert all(torch.equal(after[k], again[k]) for k in after)  # seeded: the same bits


def test_public_rows_are_one_draw_for_every_device():
    public = np.arange(100, 1100)
    a = public_rows(public, 500, 42, 3)
    assert np.array_equal(a, public_rows(np.random.default_rng(0).permutation(public), 500, 42, 3))
    assert not np.array_equal(a, public_rows(public, 500, 42, 4))
    assert len(np.unique(a)) == 500 and np.isin(a, public).all()
