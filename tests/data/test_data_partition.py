"""Tests of the partitions of a dataset over devices."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import shared_data_dir

from fedsim.data import Dataset, DevicePartition, load_dataset, partition
from fedsim.errors import InputError


def make_dataset(n_train: int = 6000, n_test: int = 1000, num_classes: int = 10) -> Dataset:
    rng = np.random.default_rng(123)
    y_train = rng.integers(0, num_classes, n_train)
    y_test = rng.integers(0, num_classes, n_test)
    return Dataset(
        name="toy",
        x_train=np.zeros((n_train, 2), dtype=np.float32),
        y_train=y_train.astype(np.int64),
        x_test=np.zeros((n_test, 2), dtype=np.float32),
        y_test=y_test.astype(np.int64),
        num_classes=num_classes,
        input_shape=(2,),
    )


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", None, seed=0)


def all_idx(parts: list[DevicePartition], which: str) -> np.ndarray:
    return np.concatenate([getattr(p, which) for p in parts])


def assert_well_formed(parts: list[DevicePartition], ds: Dataset, num_devices: int) -> None:
    assert len(parts) == num_devices
    for p in parts:
        for idx in (p.train_idx, p.test_idx):
            assert idx.dtype == np.int64 and len(idx) >= 1
            assert np.all(np.diff(idx) > 0)  # sorted, no repeats within a device
        assert p.train_idx.max() < len(ds.y_train) and p.test_idx.max() < len(ds.y_test)


def assert_disjoint_cover(parts: list[DevicePartition], ds: Dataset, test_too: bool) -> None:
    train = all_idx(parts, "train_idx")
    np.testing.assert_array_equal(np.sort(train), np.arange(len(ds.y_train)))
    if test_too:
        test = all_idx(parts, "test_idx")
        np.testing.assert_array_equal(np.sort(test), np.arange(len(ds.y_test)))


def same(a: list[DevicePartition], b: list[DevicePartition]) -> bool:
    return all(
        np.array_equal(x.train_idx, y.train_idx) and np.array_equal(x.test_idx, y.test_idx)
        for x, y in zip(a, b, strict=True)
    )


CASES = [
    ("iid", {}),
    ("shards", {"shards_per_device": 2}),
    ("shards", {"shards_per_device": 3}),
    ("dirichlet", {"alpha": 0.5}),
    ("dirichlet", {"alpha": 0.1, "test_per_device": 20}),
]


@pytest.mark.parametrize(("kind", "params"), CASES)
def test_deterministic_given_rng_state(digits: Dataset, kind: str, params: dict) -> None:
    a = partition(digits, 20, kind, np.random.default_rng(7), **params)
    b = partition(digits, 20, kind, np.random.default_rng(7), **params)
    c = partition(digits, 20, kind, np.random.default_rng(8), **params)
    assert same(a, b)
    assert not same(a, c)


def test_iid_even_disjoint_cover(digits: Dataset) -> None:
    parts = partition(digits, 13, "iid", np.random.default_rng(0))
    assert_well_formed(parts, digits, 13)
    assert_disjoint_cover(parts, digits, test_too=True)
    sizes = [len(p.train_idx) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("spd", [1, 2, 3])
def test_shards_labels_and_test_match(spd: int) -> None:
    ds = make_dataset()
    parts = partition(ds, 50, "shards", np.random.default_rng(1), shards_per_device=spd)
    assert_well_formed(parts, ds, 50)
    assert_disjoint_cover(parts, ds, test_too=True)
    for p in parts:
        train_labels = set(np.unique(ds.y_train[p.train_idx]))
        test_labels = set(np.unique(ds.y_test[p.test_idx]))
        assert test_labels <= train_labels
        # a shard of 6000 / (50 * spd) label-sorted samples spans at most 2 labels
        assert len(train_labels) <= 2 * spd
    sizes = [len(p.train_idx) for p in parts]
    assert max(sizes) - min(sizes) <= spd


def test_shards_mtfl_mnist_like_two_labels_per_device(digits: Dataset) -> None:
    parts = partition(digits, 40, "shards", np.random.default_rng(2), shards_per_device=2)
    n_labels = [len(np.unique(digits.y_train[p.train_idx])) for p in parts]
    assert np.mean(n_labels) < 3  # mostly 2 labels per device, as in McMahan et al.
    for p in parts:
        assert set(digits.y_test[p.test_idx]) <= set(digits.y_train[p.train_idx])


def test_dirichlet_proportional_test_matches_train_distribution() -> None:
    ds = make_dataset(n_train=20000, n_test=5000)
    parts = partition(ds, 20, "dirichlet", np.random.default_rng(3), alpha=0.3)
    assert_well_formed(parts, ds, 20)
    assert_disjoint_cover(parts, ds, test_too=True)
    for p in parts:
        tr = np.bincount(ds.y_train[p.train_idx], minlength=10) / len(p.train_idx)
        te = np.bincount(ds.y_test[p.test_idx], minlength=10) / len(p.test_idx)
        assert set(np.flatnonzero(te)) <= set(np.flatnonzero(tr))
        assert np.abs(tr - te).sum() < 0.2


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_not() -> None:
    ds = make_dataset()
    skewed = partition(ds, 10, "dirichlet", np.random.default_rng(4), alpha=0.05)
    flat = partition(ds, 10, "dirichlet", np.random.default_rng(4), alpha=1000.0)

    def top_share(parts: list[DevicePartition]) -> float:
        return float(
            np.mean([np.bincount(ds.y_train[p.train_idx]).max() / len(p.train_idx) for p in parts])
        )

    assert top_share(skewed) > 0.5 > 0.2 > top_share(flat)


def test_dirichlet_test_per_device() -> None:
    ds = make_dataset()
    parts = partition(ds, 30, "dirichlet", np.random.default_rng(5), alpha=0.5, test_per_device=25)
    assert_well_formed(parts, ds, 30)
    assert_disjoint_cover(parts, ds, test_too=False)
    for p in parts:
        assert len(p.test_idx) == 25
        assert set(ds.y_test[p.test_idx]) <= set(ds.y_train[p.train_idx])


def test_dirichlet_every_device_gets_data_even_when_tiny() -> None:
    ds = make_dataset(n_train=1500, n_test=1000)
    parts = partition(ds, 1000, "dirichlet", np.random.default_rng(6), alpha=0.05)
    assert_well_formed(parts, ds, 1000)
    assert_disjoint_cover(parts, ds, test_too=False)


def test_natural_one_device_per_user() -> None:
    ds = load_dataset("synthetic", None, seed=1, num_samples=600, num_users=12)
    parts = partition(ds, 12, "natural", np.random.default_rng(0))
    assert_well_formed(parts, ds, 12)
    assert_disjoint_cover(parts, ds, test_too=True)
    assert ds.users_train is not None and ds.users_test is not None
    for user, p in enumerate(parts):
        assert np.all(ds.users_train[p.train_idx] == user)
        assert np.all(ds.users_test[p.test_idx] == user)


def test_natural_errors(digits: Dataset) -> None:
    syn = load_dataset("synthetic", None, seed=1, num_samples=600, num_users=12)
    with pytest.raises(InputError, match="12 users but the topology has 10 devices"):
        partition(syn, 10, "natural", np.random.default_rng(0))
    with pytest.raises(InputError, match="needs a dataset with users"):
        partition(digits, 10, "natural", np.random.default_rng(0))


@pytest.mark.parametrize(
    ("num_devices", "kind", "params", "fragment"),
    [
        (10, "random", {}, "unknown kind"),
        (10, "iid", {"beta": 1}, "unknown parameter"),
        (0, "iid", {}, "positive integer"),
        (2000, "iid", {}, "only 1438 train and 359 test"),
        (300, "shards", {"shards_per_device": 5}, "1500 shards"),
        (10, "shards", {"shards_per_device": 0}, "shards_per_device"),
        (10, "dirichlet", {"alpha": -1.0}, "alpha"),
        (10, "dirichlet", {"test_per_device": 0}, "test_per_device"),
        (300, "shards", {"shards_per_device": 4}, "get no test sample"),
    ],
)
def test_errors(digits: Dataset, num_devices: int, kind: str, params: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        partition(digits, num_devices, kind, np.random.default_rng(0), **params)


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    data = shared_data_dir()
    if not (data / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not present in {data / 'mnist'}")
    return load_dataset("mnist", data, seed=0)


@pytest.mark.parametrize(("kind", "params"), CASES)
def test_thousand_devices_on_mnist(mnist: Dataset, kind: str, params: dict) -> None:
    ds = mnist
    parts = partition(ds, 1000, kind, np.random.default_rng(0), **params)
    assert_well_formed(parts, ds, 1000)
    assert_disjoint_cover(parts, ds, test_too=kind != "dirichlet")
