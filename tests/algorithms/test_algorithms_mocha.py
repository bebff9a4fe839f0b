"""MOCHA: per-device convex models coupled by relationships the cloud learns; rows travel."""

import json
import re

import numpy as np
import pytest
import torch
from helpers import REPO, cut_and_resume, run_on_ray, same_files, watch_uploads

from fedsim.algorithms.base import DeviceTask, build_algorithm
from fedsim.algorithms.mocha import IDS, NEW, PRECISION, ROW, Mocha, relationships
from fedsim.api import run
from fedsim.config import ComponentSpec, load_scenario
from fedsim.errors import InputError
from fedsim.models import build_model
from fedsim.prepare import check
from fedsim.runtime.training import DeviceJob, LocalSGD, train_loop

MOCHA = REPO / "scenarios" / "perfit" / "mocha.yaml"
SHORT = ("stop.max_rounds=3", "evaluation.every=3")
FILES = ("rounds.csv", "device_rounds.csv", "device_ua.csv")
ROW_VALUES = 561 * 6 + 6  # logreg on synthetic_har's engineered features


@pytest.fixture(scope="module")
def mocha_run(tmp_path_factory):
    """The shipped MOCHA scenario for three rounds, with every payload an edge saw."""
    mp = pytest.MonkeyPatch()
    seen = watch_uploads(mp)
    try:
        result = run(load_scenario(MOCHA, list(SHORT)), tmp_path_factory.mktemp("mocha") / "run")
    finally:
        mp.undo()
    return result, seen


def test_each_device_uploads_its_own_row_and_edges_relay_them(mocha_run):
    result, seen = mocha_run
    done = result.device_rounds[result.device_rounds["status"] == "completed"]
    assert len(done) == 15
    assert (done["bytes_up"] == ROW_VALUES * 4).all()
    assert (done["bytes_down"] == (ROW_VALUES + 1) * 4).all()  # coupling and M_tt
    device_payloads = [keys for keys in seen if len(keys) == 1]
    assert device_payloads and all(next(iter(k)).startswith(NEW) for k in device_payloads)
    # the backhaul carries one row per device that reported (nothing is averaged)
    for _, row in result.rounds.iterrows():
        assert row["bytes_up"] == 2 * row["completed"] * ROW_VALUES * 4
    meta = json.loads((result.path / "run.json").read_text())["model"]
    assert meta["upload_bytes"] == ROW_VALUES * 4


def test_ua_is_each_devices_own_model_and_there_is_no_global_model(mocha_run):
    result, _ = mocha_run
    last = result.rounds.iloc[-1]
    assert np.isnan(last["accuracy"]) and last["ua_mean"] > 0
    assert result.summary["final_accuracy"] is None


def test_relationships_couple_alike_devices_and_keep_unlike_ones_apart():
    a, b = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    b -= b.dot(a) / a.dot(a) * a  # orthogonal to a
    m = relationships(torch.stack([a, a.clone(), b]), eps=1e-3)
    assert torch.allclose(m, m.T)
    assert m[0, 1] < -1.0  # alike: a negative precision pulls the rows together
    assert abs(float(m[0, 2])) < 1e-6 * abs(float(m[0, 1]))  # unlike: no pull


def _device(lam: float):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model("logreg", (20,), 3)
    x, y = torch.randn(60, 20), torch.randint(0, 3, (60,))
    algo = build_algorithm(
        ComponentSpec(use="mocha", params={"lr": 0.1, "lam": lam, "weight_decay": 0.0})
    )
    assert isinstance(algo, Mocha)
    algo.bind(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    return model, algo, start, x, y


def test_without_relationships_the_local_solver_is_plain_sgd():
    model, algo, start, x, y = _device(lam=0.0)
    rows = np.arange(40)
    task = DeviceTask(3, rows, 11, start)
    (u,) = algo.train(model, algo.initial_state(model), x, y, [task], False)
    (ref,) = train_loop(model, start, x, y, [DeviceJob(3, rows, 11)], LocalSGD(0.1, 1, 20))
    assert all(torch.equal(u.private[k], ref.state[k]) for k in ref.state)


def test_the_coupling_pulls_a_device_towards_related_models():
    model, algo, start, x, y = _device(lam=5.0)
    other = torch.cat([v.reshape(-1) for v in start.values()]) + 1.0
    state = {
        **algo.initial_state(model),
        IDS: torch.tensor([3, 7]),
        f"{ROW}3": other.clone(),
        f"{ROW}7": other.clone(),
        PRECISION: relationships(torch.stack([other, other]), 1e-3),
    }
    task = DeviceTask(3, np.arange(40), 11, start)
    (coupled,) = algo.train(model, state, x, y, [task], False)
    (alone,) = algo.train(model, algo.initial_state(model), x, y, [task], False)
    row = coupled.payload[f"{NEW}3"]
    solo = alone.payload[f"{NEW}3"]
    assert (row - other).norm() < (solo - other).norm()


def test_resumes_byte_identical(mocha_run, tmp_path):
    ref, _ = mocha_run
    res = cut_and_resume(
        load_scenario(MOCHA, [*SHORT, "checkpoint.every_rounds=1"]), tmp_path / "cut", 1
    )
    same_files(ref.path, res.path, FILES)


@pytest.mark.ray
def test_mocha_is_byte_identical_inline_and_on_ray(mocha_run, tmp_path):
    ref, _ = mocha_run
    sc = load_scenario(MOCHA, [*SHORT, "runtime.kind=ray", "runtime.workers=2"])
    same_files(ref.path, run_on_ray(sc, tmp_path / "ray").path, FILES)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["model=perfit_3nn"], "mocha needs a convex model, a single linear layer"),
        (["rounds.cloud_every=2"], "rounds.cloud_every: mocha needs 1"),
        (["rounds={kind: async, concurrency: 5}"], "mocha runs synchronous rounds only"),
    ],
)
def test_settings_mocha_cannot_run_are_refused(sets, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check(load_scenario(MOCHA, sets))
