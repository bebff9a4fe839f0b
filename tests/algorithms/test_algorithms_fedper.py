"""FedPer: the personalisation layers never leave a device; only the base layers travel."""

import pytest
from helpers import REPO, run_on_ray, same_files, watch_uploads

from fedsim.algorithms.fedper import last_layer
from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.errors import InputError
from fedsim.models import build_model

MNIST = REPO / "scenarios" / "mnist_2nn.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
SMALL = (
    "topology.edges.0.devices.0.count=10", "topology.edges.0.devices.1.count=10",
    "stop.max_rounds=3", "stop.target_accuracy=null",
)  # fmt: skip
HEAD_BYTES = (200 * 10 + 10) * 4  # mtfl_2nn's classifier, layer "5"


pytestmark = pytest.mark.usefixtures("mnist_env")


def test_the_default_personal_layer_is_the_last_with_parameters():
    assert last_layer(build_model("mtfl_2nn", (784,), 10)) == "5"
    assert last_layer(build_model("perfit_3nn", (561,), 6)) == "4"


def test_only_base_layers_are_uploaded_and_bytes_shrink_by_the_head(tmp_path, monkeypatch):
    seen = watch_uploads(monkeypatch)
    fl = run(load_scenario(MNIST, list(SMALL)), tmp_path / "fl")
    seen.clear()
    per = run(load_scenario(MNIST, [*SMALL, "algorithm.use=fedper"]), tmp_path / "fedper")

    assert seen and all(not any(k.startswith("5.") for k in keys) for keys in seen)
    assert all("0.weight" in keys for keys in seen)  # the base layers do travel
    a, b = fl.device_rounds, per.device_rounds
    done = a["status"] == "completed"
    assert list(a["device_id"]) == list(b["device_id"])
    assert ((a["bytes_up"] - b["bytes_up"])[done] == HEAD_BYTES).all()
    assert ((a["bytes_down"] - b["bytes_down"])[done] == HEAD_BYTES).all()
    # each device's own head: its user model is not the global one
    assert not per.rounds["ua_mean"].equals(fl.rounds["ua_mean"])


def test_named_personal_layers_and_unknown_names(tmp_path):
    sc = load_scenario(
        MNIST, [*SMALL, "stop.max_rounds=1", "algorithm={use: fedper, params: "
                "{lr: 0.3, personal_layers: ['3', '5']}}"]
    )  # fmt: skip
    one = run(sc, tmp_path / "two_layers")
    head = HEAD_BYTES + (200 * 200 + 200) * 4
    full = run(load_scenario(MNIST, [*SMALL, "stop.max_rounds=1"]), tmp_path / "fl")
    done = one.device_rounds["status"] == "completed"
    diff = full.device_rounds["bytes_up"] - one.device_rounds["bytes_up"]
    assert (diff[done] == head).all()
    bad = load_scenario(
        MNIST, [*SMALL, "algorithm={use: fedper, params: {personal_layers: ['9']}}"]
    )
    with pytest.raises(InputError, match="no module '9'"):
        run(bad, tmp_path / "bad")


@pytest.mark.ray
def test_fedper_is_byte_identical_inline_and_on_ray(tmp_path):
    sets = [*SMALL, "algorithm.use=fedper"]
    ref = run(load_scenario(MNIST, sets), tmp_path / "inline")
    sc = load_scenario(MNIST, [*sets, "runtime.kind=ray", "runtime.workers=2"])
    same_files(ref.path, run_on_ray(sc, tmp_path / "ray").path, FILES)
