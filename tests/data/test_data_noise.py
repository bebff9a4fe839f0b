"""Noisy clients (MTFL's Table 3): who is noisy, what their rows are, and UA over the others."""

import numpy as np
import pytest
from helpers import REPO, shared_data_dir

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.data import load_dataset, partition
from fedsim.data.noise import add_noise, noisy_devices
from fedsim.seeding import Purpose, stream


def test_noisy_devices_are_a_keyed_fraction():
    a = noisy_devices(7, 200, 0.2)
    assert len(a) == 40 and list(a) == sorted(set(a.tolist()))
    assert list(a) == list(noisy_devices(7, 200, 0.2))  # keyed: the same every time
    assert list(a) != list(noisy_devices(8, 200, 0.2))
    assert len(noisy_devices(7, 3, 0.01)) == 1  # at least one when asked for


def test_noisy_rows_are_copies_with_gaussian_noise_and_the_rest_is_untouched():
    # Arrange
    ds = load_dataset("digits", None, 1)
    parts = partition(ds, 10, "iid", stream(1, Purpose.PARTITION))
    noisy = np.array([2, 5])

    # Act
    out, new = add_noise(ds, parts, noisy, 3.0, 1)

    # Assert: the global test set keeps its rows; clean devices point where they did
    assert out.global_test_rows == len(ds.y_test)
    assert np.array_equal(out.x_test[: len(ds.y_test)], ds.x_test)
    for d in range(10):
        if d in (2, 5):
            noise = out.x_train[new[d].train_idx] - ds.x_train[parts[d].train_idx]
            assert abs(float(noise.std()) - 3.0) < 0.1 and abs(float(noise.mean())) < 0.1
            assert np.array_equal(out.y_train[new[d].train_idx], ds.y_train[parts[d].train_idx])
            test_noise = out.x_test[new[d].test_idx] - ds.x_test[parts[d].test_idx]
            assert float(test_noise.std()) > 2.5
        else:
            assert np.array_equal(new[d].train_idx, parts[d].train_idx)
            assert np.array_equal(new[d].test_idx, parts[d].test_idx)


def test_ua_over_clean_devices_is_reported(tmp_path, monkeypatch):
    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    monkeypatch.setenv("FEDSIM_DATA", str(data))
    sets = [
        "topology.edges.0.devices.0.count=10", "topology.edges.0.devices.1.count=10",
        "stop.max_rounds=2", "stop.target_accuracy=null",
        "data.noise={fraction: 0.25, std: 3.0}",
    ]  # fmt: skip
    res = run(load_scenario(REPO / "scenarios" / "mnist_2nn.yaml", sets), tmp_path / "out")
    noisy = set(noisy_devices(1, 20, 0.25).tolist())
    ua = res.device_ua
    for version, group in ua.groupby("version"):
        clean = group[~group["device_id"].isin(noisy)]["accuracy"].mean()
        row = res.rounds[res.rounds["version"] == version].iloc[0]
        assert row["ua_mean_clean"] == pytest.approx(clean, rel=1e-12)
        assert row["ua_mean"] == pytest.approx(group["accuracy"].mean(), rel=1e-12)
