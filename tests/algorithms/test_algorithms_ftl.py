"""FTL: each device's user model is the global model fine-tuned on its own rows, changing
only the layers it is told to."""

import numpy as np
import pytest
import torch
from helpers import REPO, shared_data_dir

from fedsim.algorithms.base import build_algorithm
from fedsim.api import run
from fedsim.config import ComponentSpec, load_scenario
from fedsim.data import load_dataset
from fedsim.errors import InputError
from fedsim.models import build_model

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
SMALL = (
    "topology.edges.0.devices.0.count=10", "topology.edges.0.devices.1.count=10",
    "stop.max_rounds=3", "stop.target_accuracy=null",
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("mnist_env")


def _device(seed: int = 0):
    ds = load_dataset("mnist", shared_data_dir(), seed)
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train).long()
    rows = np.flatnonzero(np.isin(ds.y_train, [3, 8]))[:300]  # a device of two classes
    torch.manual_seed(seed)
    model = build_model("mtfl_2nn", (784,), 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return model, state, x, y, rows


@pytest.mark.parametrize(
    "tune, changed",
    [
        ([], {"5.weight", "5.bias"}),  # default: the last layer
        (["2"], {"2.weight", "2.bias", "2.running_mean", "2.running_var",
                 "2.num_batches_tracked"}),  # a BatchNorm layer: its statistics too
        (["0", "5"], {"0.weight", "0.bias", "5.weight", "5.bias"}),
    ],
)  # fmt: skip
def test_fine_tuning_changes_only_the_layers_it_is_told_to(tune, changed):
    model, state, x, y, rows = _device()
    alg = build_algorithm(
        ComponentSpec(use="ftl", params={"lr": 0.3, "tune_layers": tune, "tune_lr": 0.1})
    )
    alg.bind(model)
    before = {k: v.clone() for k, v in state.items()}

    user = alg.personalise(model, state, x, y, rows, seed=7)

    assert user is not None and set(user) == set(state)
    assert {k for k in state if not torch.equal(user[k], before[k])} == changed
    assert all(torch.equal(state[k], before[k]) for k in state)  # the input is untouched
    assert all(p.requires_grad for p in model.parameters())  # the scratch model restored
    again = alg.personalise(model, state, x, y, rows, seed=7)
    assert all(torch.equal(user[k], again[k]) for k in user)  # seeded: the same bits


def test_fine_tuning_the_head_fits_the_devices_classes():
    model, state, x, y, rows = _device()
    alg = build_algorithm(ComponentSpec(use="ftl", params={"tune_epochs": 3, "tune_lr": 0.1}))
    alg.bind(model)
    user = alg.personalise(model, state, x, y, rows, seed=1)
    with torch.no_grad():
        model.load_state_dict(user)
        pred = model.eval()(x[torch.from_numpy(rows)]).argmax(1)
    assert set(pred.unique().tolist()) <= {3, 8}  # a random body, a head fitted to 3 and 8
    assert float((pred == y[torch.from_numpy(rows)]).double().mean()) > 0.9


def test_ftl_user_models_beat_the_global_model_on_non_iid_devices(tmp_path):
    sets = [*SMALL, "evaluation.every=3"]  # FTL fine-tunes every device at an evaluation
    fl = run(load_scenario(MNIST, sets), tmp_path / "fl")
    ftl = run(load_scenario(MNIST, [*sets, "algorithm.use=ftl"]), tmp_path / "ftl")
    # the same training: the global model is the same
    assert fl.rounds["accuracy"].equals(ftl.rounds["accuracy"])
    evaluated = ftl.rounds["ua_mean"].notna()
    assert evaluated.any() and evaluated.equals(fl.rounds["ua_mean"].notna())
    ua_ftl, ua_fl = ftl.rounds["ua_mean"][evaluated], fl.rounds["ua_mean"][evaluated]
    assert (ua_ftl > ua_fl + 0.05).all()
    # UA before personalisation is the global model's on each device: FL's UA (to the odd
    # argmax tie between a block's forward pass and a device's own)
    assert np.allclose(ftl.rounds["ua_before_mean"][evaluated], ua_fl, atol=2e-3)
    assert fl.rounds["ua_before_mean"].isna().all()  # FedAvg does not personalise
    before = ftl.device_ua["accuracy_before"]
    assert before.notna().all() and (ftl.device_ua["accuracy"] != before).any()
    again = run(load_scenario(MNIST, [*sets, "algorithm.use=ftl"]), tmp_path / "again")
    assert again.rounds["ua_mean"].equals(ftl.rounds["ua_mean"])


def test_unknown_tune_layer_is_a_clear_error(tmp_path):
    bad = load_scenario(MNIST, [*SMALL, "algorithm={use: ftl, params: {tune_layers: ['7']}}"])
    with pytest.raises(InputError, match=r"tune_layers: no module '7'"):
        run(bad, tmp_path / "bad")
