"""synthetic_har: HAR-shaped (561 engineered features or 9 x 128 inertial windows), a pure
function of the seed and keyed per user, users with their own activity mix and their own
transform, balanced or skewed test rows, bad options named; a scenario on it runs two
rounds end to end with PerFit's 3NN and CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.data import DATASET_NAMES, Dataset, load_dataset
from fedsim.data.synthetic_har import user_labels
from fedsim.errors import InputError

SMALL = {"num_users": 5, "samples_per_user": 120}


def make(seed: int = 1, **options: object) -> Dataset:
    return load_dataset("synthetic_har", None, seed=seed, **{**SMALL, **options})


def same(a: Dataset, b: Dataset) -> bool:
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("x_train", "y_train", "x_test", "y_test", "users_train", "users_test")
    )


@pytest.mark.parametrize(("features", "shape"), [("engineered", (561,)), ("inertial", (9, 128))])
def test_shapes_types_and_users(features: str, shape: tuple[int, ...]) -> None:
    ds = make(features=features)
    assert "synthetic_har" in DATASET_NAMES
    assert ds.name == "synthetic_har" and ds.num_classes == 6 and ds.input_shape == shape
    assert ds.x_train.shape == (5 * 90, *shape) and ds.x_test.shape == (5 * 30, *shape)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.users_train is not None and ds.users_test is not None
    assert np.bincount(ds.users_train).tolist() == [90] * 5
    assert np.bincount(ds.users_test).tolist() == [30] * 5
    assert np.all(np.isfinite(ds.x_train)) and set(np.unique(ds.y_test)) == set(range(6))
    if features == "engineered":
        assert np.abs(ds.x_train).max() < 1  # like UCI HAR's features, in (-1, 1)
    else:  # each channel standardised with the training windows
        np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(ds.x_train.std(axis=(0, 2)), 1, atol=1e-3)


@pytest.mark.parametrize("features", ["engineered", "inertial"])
def test_a_pure_function_of_the_seed(features: str) -> None:
    assert same(make(1, features=features), make(1, features=features))
    assert not same(make(1, features=features), make(2, features=features))


def test_a_users_windows_do_not_depend_on_how_many_users_there_are() -> None:
    few, many = make(num_users=3), make(num_users=5)
    assert few.users_train is not None and many.users_train is not None
    np.testing.assert_array_equal(
        few.x_train[few.users_train == 2], many.x_train[many.users_train == 2]
    )
    # the labels are the same in both views
    np.testing.assert_array_equal(make(features="inertial").y_train, many.y_train)


def test_users_have_their_own_activity_mix_and_balanced_tests() -> None:
    ds = make(num_users=6, samples_per_user=400, alpha=0.5)
    assert ds.users_train is not None and ds.users_test is not None
    mixes = np.array(
        [np.bincount(ds.y_train[ds.users_train == u], minlength=6) / 300 for u in range(6)]
    )
    assert np.ptp(mixes, axis=0).max() > 0.3  # some activity's share differs a lot
    for u in range(6):
        test_counts = np.bincount(ds.y_test[ds.users_test == u], minlength=6)
        assert np.ptp(test_counts) <= 1  # test_mix: balanced
        mix, y_train, _ = user_labels(1, u, {**SMALL, "num_activities": 6, "samples_per_user": 400,
                                              "test_fraction": 0.25, "alpha": 0.5,
                                              "test_mix": "balanced"})  # fmt: skip
        np.testing.assert_allclose(np.bincount(y_train, minlength=6) / 300, mix, atol=1 / 300)
    skewed = make(num_users=6, samples_per_user=400, alpha=0.5, test_mix="user")
    assert skewed.users_test is not None
    test_mix = np.bincount(skewed.y_test[skewed.users_test == 0], minlength=6) / 100
    np.testing.assert_allclose(test_mix, mixes[0], atol=0.02)


@pytest.mark.parametrize("features", ["engineered", "inertial"])
def test_users_differ_beyond_their_mix_unless_user_shift_is_zero(features: str) -> None:
    def user_gap(shift: float) -> float:
        ds = make(features=features, user_shift=shift, samples_per_user=300, test_mix="user")
        assert ds.users_train is not None
        flat = ds.x_train.reshape(len(ds.x_train), -1)
        if features == "inertial":
            flat = np.concatenate(
                [flat.reshape(-1, 9, 128).mean(2), flat.reshape(-1, 9, 128).std(2)], 1
            )
        gaps = []
        for a in range(6):  # the same activity, two users: how far apart are their means?
            rows = [flat[(ds.users_train == u) & (ds.y_train == a)] for u in (0, 1)]
            if min(len(r) for r in rows) >= 5:
                gaps.append(np.linalg.norm(rows[0].mean(0) - rows[1].mean(0)))
        return float(np.mean(gaps))

    assert user_gap(1.0) > 2 * user_gap(0.0)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"features": "raw"}, "data.options.features: expected engineered or inertial"),
        ({"test_mix": "x"}, "data.options.test_mix: expected balanced or user"),
        ({"num_users": 0}, r"data.options.num_users: expected a number in \[1, 10000\]"),
        ({"alpha": 0.0}, "data.options.alpha"),
        ({"test_fraction": 0.0}, "data.options.test_fraction: expected 0 < value < 1"),
        ({"num_users": 10_000, "samples_per_user": 100_000}, "must fit in memory"),
        ({"num_samples": 10}, "unknown option for dataset 'synthetic_har'"),
        ({"samples_per_user": 1.5}, "data.options.samples_per_user: expected int"),
    ],
)
def test_bad_options(options: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load_dataset("synthetic_har", None, seed=0, **options)


SCENARIO = REPO / "scenarios" / "perfit" / "har_synthetic.yaml"
TINY = [
    "data.options.num_users=4", "data.options.samples_per_user=80",
    "data.partition.train_per_device=40", "data.partition.test_per_device=12",
    "topology.edges.0.devices.0.count=1", "topology.edges.0.devices.1.count=1",
    "topology.edges.1.devices.0.count=1", "topology.edges.1.devices.1.count=1",
    "rounds.participants=2", "stop.max_rounds=2", "evaluation.every=1",
]  # fmt: skip


@pytest.mark.parametrize(
    "extra", [[], ["model=perfit_cnn", "data.options.features=inertial"]], ids=["3nn", "cnn"]
)
def test_the_perfit_scenario_runs_two_rounds(tmp_path: Path, extra: list[str]) -> None:
    scenario = load_scenario(SCENARIO, TINY + extra)
    result = run(scenario, tmp_path / "out")
    rounds = result.rounds
    assert rounds["round"].tolist() == [0, 1] and (rounds["completed"] == 2).all()
    assert rounds["accuracy"].between(0, 1).all() and rounds["ua_mean"].between(0, 1).all()
    assert (tmp_path / "out" / "run.json").is_file()
