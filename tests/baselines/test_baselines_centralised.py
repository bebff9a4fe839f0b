"""Centralised baselines: pooled training, per-device accuracy, the command line."""

import filecmp

import numpy as np
import pytest
from helpers import REPO
from sklearn.neighbors import KNeighborsClassifier

from fedsim.baselines import METHODS, BaselineOptions, run_baselines, summarise
from fedsim.baselines.cli import PER_DEVICE_FILE, SUMMARY_FILE, main
from fedsim.data import load_dataset, partition
from fedsim.seeding import Purpose, stream

# digits, 30 devices, Dirichlet(1.0) label skew; PerFit's 3NN as the centrally trained net
SCENARIO = REPO / "scenarios" / "quickstart.yaml"
SETS = ["seed=3", "model=perfit_3nn"]
NUM_DEVICES = 30


@pytest.fixture(scope="module")
def per_device():
    return run_baselines(SCENARIO, BaselineOptions(epochs=10), SETS)


def test_every_method_has_a_row_for_every_device(per_device):
    assert list(per_device.columns) == ["method", "device_id", "test_samples", "accuracy"]
    assert list(per_device["method"].unique()) == list(METHODS)
    for _, group in per_device.groupby("method"):
        assert group["device_id"].tolist() == list(range(NUM_DEVICES))
        assert (group["test_samples"] > 0).all()
        assert group["accuracy"].between(0, 1).all()
    summary = summarise(per_device)
    assert summary["method"].tolist() == list(METHODS)
    assert (summary["devices"] == NUM_DEVICES).all()
    means = per_device.groupby("method", sort=False)["accuracy"].mean()
    assert np.allclose(summary["ua_mean"], means.to_numpy())


def test_knn_accuracy_matches_scikit_learn_on_the_pooled_training_data(per_device):
    # rebuild the simulator's data by hand: digits split by the seed, partitioned as the
    # scenario says (Dirichlet, alpha 1.0, the seed's partition stream)
    ds = load_dataset("digits", None, 3)
    parts = partition(ds, NUM_DEVICES, "dirichlet", stream(3, Purpose.PARTITION), alpha=1.0)
    pooled = np.unique(np.concatenate([p.train_idx for p in parts]))
    knn = KNeighborsClassifier(n_neighbors=5)
    knn.fit(ds.x_train[pooled].reshape(len(pooled), -1), ds.y_train[pooled])
    device = 7
    test = parts[device].test_idx
    predicted = knn.predict(ds.x_test[test].reshape(len(test), -1))
    expected = float(np.mean(predicted == ds.y_test[test]))
    row = per_device[(per_device["method"] == "knn") & (per_device["device_id"] == device)]
    assert row["test_samples"].item() == len(test)
    assert row["accuracy"].item() == expected


def test_the_central_net_is_far_better_than_chance(per_device):
    nn = per_device[per_device["method"] == "nn"]["accuracy"]
    assert nn.mean() > 0.8  # 10 classes: chance is 0.1


def test_same_seed_gives_byte_identical_files(tmp_path):
    args = [str(SCENARIO), "--methods", "knn,rf,nn", "--epochs", "2", "--max-train", "600",
            "--rf-trees", "20", "--quiet", *(f"--set={s}" for s in SETS)]  # fmt: skip
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main([*args, "--out", str(out)]) == 0
    for name in (PER_DEVICE_FILE, SUMMARY_FILE):
        assert filecmp.cmp(outs[0] / name, outs[1] / name, shallow=False), name
    assert "nn,30,600," in (outs[0] / SUMMARY_FILE).read_text()
    assert not list(tmp_path.glob("*/.*tmp*"))  # written atomically: no temporary left
    other = tmp_path / "seed4"
    assert main([*args, "--set=seed=4", "--out", str(other)]) == 0
    assert (other / PER_DEVICE_FILE).read_bytes() != (outs[0] / PER_DEVICE_FILE).read_bytes()


def test_a_bad_method_is_exit_code_2_naming_the_field(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(SCENARIO), "--out", str(out), "--methods", "svm,bogus"]) == 2
    err = capsys.readouterr().err
    assert "--methods" in err and "'bogus'" in err
    assert not out.exists()


def test_purposes_are_distinct_stream_keys():
    # an IntEnum member with a taken value is an alias: its streams would be another's
    assert len({int(p) for p in Purpose}) == len(Purpose.__members__)
