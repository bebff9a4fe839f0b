"""FedAdam: the cloud's Adam step by hand, and whole runs (inline = Ray, resume)."""

import pytest
import torch
from helpers import REPO, cut_and_resume, run_on_ray, same_files

from fedsim.algorithms.base import build_algorithm
from fedsim.api import run
from fedsim.config import AlgorithmSpec, load_scenario
from fedsim.errors import InputError

QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
FEDADAM = (
    "algorithm.use=fedadam", "algorithm.params.lr=0.1", "algorithm.params.server_lr=0.05",
    "stop.max_rounds=6", "stop.target_accuracy=null", "checkpoint.every_rounds=2",
)  # fmt: skip


def test_server_step_is_a_hand_computed_adam_step():
    # Arrange: η 0.1, β1 0.5, β2 0.75, ε 0.25; a weight and a buffer
    algo = build_algorithm(
        AlgorithmSpec(
            use="fedadam", params={"server_lr": 0.1, "beta1": 0.5, "beta2": 0.75, "eps": 0.25}
        )  # fmt: skip
    )
    x = {"w": torch.tensor([1.0, 2.0]), "running_mean": torch.tensor([0.0])}
    mean1 = {"w": torch.tensor([3.0, 2.0]), "running_mean": torch.tensor([5.0])}

    # Act: two syncs
    x1, opt1 = algo.server_step(x, mean1, {}, ["w"])
    mean2 = {"w": x1["w"] - torch.tensor([1.0, 1.0]), "running_mean": torch.tensor([6.0])}
    x2, opt2 = algo.server_step(x1, mean2, opt1, ["w"])

    # Assert: Δ1 = (2, 0): m = (1, 0), v = (1, 0), step = (1/(1+0.25), 0) = (0.8, 0)
    assert opt1["m.w"].tolist() == [1.0, 0.0] and opt1["v.w"].tolist() == [1.0, 0.0]
    assert x1["w"].tolist() == pytest.approx([1.08, 2.0])
    assert x1["running_mean"].tolist() == [5.0]  # buffers take the mean
    # Δ2 = (-1, -1): m = (0, -0.5), v = (1, 0.25), step = (0, -0.5/0.75)
    assert opt2["m.w"].tolist() == [0.0, -0.5] and opt2["v.w"].tolist() == [1.0, 0.25]
    assert x2["w"].tolist() == pytest.approx([1.08, 2.0 - 0.1 * 0.5 / 0.75])
    assert x["w"].tolist() == [1.0, 2.0]  # the old model is not changed


def test_fedadam_run_differs_from_fedavg_and_resumes_byte_identical(tmp_path):
    sc = load_scenario(QUICKSTART, list(FEDADAM))
    ref = run(sc, tmp_path / "ref")
    avg = run(load_scenario(QUICKSTART, [FEDADAM[1], *FEDADAM[3:]]), tmp_path / "avg")
    assert not ref.rounds["accuracy"].equals(avg.rounds["accuracy"])
    res = cut_and_resume(sc, tmp_path / "cut", 3)  # m and v came back from the checkpoint
    same_files(ref.path, res.path, FILES)


@pytest.mark.ray
def test_fedadam_is_byte_identical_inline_and_on_ray(tmp_path):
    ref = run(load_scenario(QUICKSTART, list(FEDADAM)), tmp_path / "inline")
    sc = load_scenario(QUICKSTART, [*FEDADAM, "runtime.kind=ray", "runtime.workers=2"])
    same_files(ref.path, run_on_ray(sc, tmp_path / "ray").path, FILES)


def test_fedadam_is_refused_for_asynchronous_runs():
    from fedsim.api import check

    sc = load_scenario(QUICKSTART, ["algorithm.use=fedadam", "rounds={kind: async}"])
    with pytest.raises(InputError, match="asynchronous run applies rounds.server"):
        check(sc, "q.yaml")
