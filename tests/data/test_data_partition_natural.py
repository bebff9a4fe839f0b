"""The natural partition's per-device sampling (PerFit's MobiAct setup): exact counts drawn
from the device's own user, class-balanced test rows as far as the user's rows allow, the
same draw for the same seed, clear errors for users with too few rows, and, with the new
fields unset, the old partition and no random draw at all."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from fedsim.config import load_scenario
from fedsim.data import Dataset, load_dataset, partition
from fedsim.data.partition_natural import balanced_counts
from fedsim.errors import InputError
from fedsim.prepare import check, device_partitions


@pytest.fixture(scope="module")
def skewed() -> Dataset:
    """8 users of 200 windows, test rows with each user's own skewed mix."""
    return load_dataset(
        "synthetic_har", None, seed=2, num_users=8, samples_per_user=200, test_fraction=0.5,
        alpha=0.5, test_mix="user",
    )  # fmt: skip


def test_counts_come_from_the_devices_own_user(skewed: Dataset) -> None:
    parts = partition(
        skewed, 8, "natural", np.random.default_rng(0), train_per_device=60, test_per_device=40
    )
    assert skewed.users_train is not None and skewed.users_test is not None
    for user, p in enumerate(parts):
        assert len(p.train_idx) == 60 and len(p.test_idx) == 40
        assert np.all(np.diff(p.train_idx) > 0) and np.all(np.diff(p.test_idx) > 0)
        assert np.all(skewed.users_train[p.train_idx] == user)
        assert np.all(skewed.users_test[p.test_idx] == user)


def test_balanced_test_is_as_balanced_as_the_users_rows_allow(skewed: Dataset) -> None:
    parts = partition(
        skewed, 8, "natural", np.random.default_rng(0), test_per_device=60, balanced_test=True
    )
    assert skewed.users_test is not None
    for user, p in enumerate(parts):
        have = np.bincount(skewed.y_test[skewed.users_test == user], minlength=6)
        got = np.bincount(skewed.y_test[p.test_idx], minlength=6)
        assert got.sum() == 60 and np.all(got <= have)
        # water-filling: a class short of rows gives all it has, the rest are level
        level = got[got < have]
        assert level.size == 0 or level.max() - level.min() <= 1
        assert np.all(got[got == have] <= (level.max() if level.size else 60))
    uniform = partition(skewed, 8, "natural", np.random.default_rng(0), test_per_device=60)
    spread = [np.ptp(np.bincount(skewed.y_test[p.test_idx], minlength=6)) for p in uniform]
    assert max(spread) > 5  # without balanced_test the skew shows


def test_balanced_counts_water_fills() -> None:
    rng = np.random.default_rng(0)
    assert balanced_counts(np.array([3, 10, 10]), 15, rng).tolist() == [3, 6, 6]
    odd = balanced_counts(np.array([3, 10, 10]), 16, rng)
    assert odd[0] == 3 and sorted(odd[1:].tolist()) == [6, 7]
    assert balanced_counts(np.array([27, 27, 27, 27, 27, 27]), 160, rng).sum() == 160
    assert balanced_counts(np.array([5, 5]), 10, rng).tolist() == [5, 5]


def test_same_seed_same_draw(skewed: Dataset) -> None:
    params = {"train_per_device": 50, "test_per_device": 30, "balanced_test": True}
    a = partition(skewed, 8, "natural", np.random.default_rng(7), **params)
    b = partition(skewed, 8, "natural", np.random.default_rng(7), **params)
    c = partition(skewed, 8, "natural", np.random.default_rng(8), **params)
    same = lambda x, y: all(  # noqa: E731
        np.array_equal(p.train_idx, q.train_idx) and np.array_equal(p.test_idx, q.test_idx)
        for p, q in zip(x, y, strict=True)
    )
    assert same(a, b) and not same(a, c)


def test_unset_fields_keep_the_old_partition_and_draw_nothing(skewed: Dataset) -> None:
    rng = np.random.default_rng(3)
    parts = partition(skewed, 8, "natural", rng, balanced_test=False)
    assert skewed.users_train is not None and skewed.users_test is not None
    for user, p in enumerate(parts):
        np.testing.assert_array_equal(p.train_idx, np.flatnonzero(skewed.users_train == user))
        np.testing.assert_array_equal(p.test_idx, np.flatnonzero(skewed.users_test == user))
    assert rng.random() == np.random.default_rng(3).random()  # the stream was not touched


def test_a_user_with_too_few_rows_is_named(skewed: Dataset) -> None:
    with pytest.raises(InputError) as err:
        partition(skewed, 8, "natural", np.random.default_rng(0), train_per_device=101)
    text = str(err.value)
    assert "train_per_device: 101 needs that many rows of each user" in text
    assert "device 0 (user 0) has 100 train rows" in text and "(and 3 more)" in text


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"train_per_device": 0}, "train_per_device: expected a positive integer"),
        ({"test_per_device": 2.5}, "test_per_device: expected a positive integer"),
        ({"balanced_test": True}, "balanced_test: needs data.partition.test_per_device"),
        ({"balanced_test": "yes", "test_per_device": 3}, "balanced_test: expected true or false"),
    ],
)
def test_bad_parameters(skewed: Dataset, params: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        partition(skewed, 8, "natural", np.random.default_rng(0), **params)


SCENARIO = REPO / "scenarios" / "perfit" / "har_synthetic.yaml"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["data.partition.kind=iid"], "data.partition.train_per_device: only with kind: natural"),
        (["data.partition.test_per_device=null"], "data.partition.balanced_test: needs test_per"),
    ],
)
def test_scenario_rules(overrides: list[str], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load_scenario(SCENARIO, overrides)


def test_the_perfit_scenario_gives_480_train_and_160_balanced_test_per_device() -> None:
    sc = load_scenario(SCENARIO)
    p = sc.data.partition
    assert (p.kind, p.train_per_device, p.test_per_device, p.balanced_test) == (
        "natural", 480, 160, True,
    )  # fmt: skip
    assert sc.topology.num_devices() == 30 and sc.rounds.participants == 5
    prep = check(sc)
    ds, parts = prep.dataset, device_partitions(prep)
    assert [len(q.train_idx) for q in parts] == [480] * 30
    for q in parts:
        counts = np.bincount(ds.y_test[q.test_idx], minlength=6)
        assert counts.sum() == 160 and np.ptp(counts) <= 1
