"""Data sharing: a class-balanced global subset, out of every partition, shared per device."""

import numpy as np
import pytest

from fedsim.data import load_dataset, partition
from fedsim.data.sharing import global_subset, partition_with_sharing
from fedsim.errors import InputError
from fedsim.seeding import Purpose, stream


def test_global_subset_is_class_balanced_and_seeded():
    y = np.repeat(np.arange(4), [50, 50, 50, 3])  # class 3 is short: the others make up
    g = global_subset(y, 4, 40, seed=1)
    assert len(g) == 40 and len(np.unique(g)) == 40 and np.all(np.diff(g) > 0)
    assert np.bincount(y[g], minlength=4).tolist() == [13, 12, 12, 3]
    assert np.array_equal(g, global_subset(y, 4, 40, seed=1))
    assert not np.array_equal(g, global_subset(y, 4, 40, seed=2))
    with pytest.raises(InputError, match="global_size: 200 rows asked"):
        global_subset(y, 4, 200, seed=1)


@pytest.mark.parametrize("kind", ["iid", "shards", "dirichlet"])
def test_devices_get_their_rows_of_g_and_no_device_owns_one(kind):
    ds = load_dataset("digits", None, 3)
    num_devices = 10

    def split(d):
        return partition(d, num_devices, kind, stream(3, Purpose.PARTITION))

    parts = partition_with_sharing(ds, split, global_size=100, per_device=20, seed=3)
    g = global_subset(ds.y_train, ds.num_classes, 100, 3)
    owned = np.concatenate([np.setdiff1d(p.train_idx, p.shared_idx) for p in parts])
    assert len(np.intersect1d(owned, g)) == 0  # G is out of every partition
    # every training row outside G is owned by exactly one device, as without sharing
    assert len(owned) == len(np.unique(owned)) == len(ds.y_train) - 100
    for p in parts:
        assert len(p.shared_idx) == 20 and np.isin(p.shared_idx, g).all()
        assert np.isin(p.shared_idx, p.train_idx).all() and np.all(np.diff(p.train_idx) > 0)
    assert len({tuple(p.shared_idx) for p in parts}) > 1  # each device its own draw
    again = partition_with_sharing(ds, split, 100, 20, 3)
    assert all(np.array_equal(a.train_idx, b.train_idx) for a, b in zip(parts, again, strict=True))


def test_more_per_device_than_g_is_refused():
    ds = load_dataset("digits", None, 3)
    with pytest.raises(InputError, match="per_device: 30 rows, more than global_size 20"):
        partition_with_sharing(ds, lambda d: [], 20, 30, 3)


def test_a_run_records_every_shared_row_and_its_bytes(tmp_path):
    import json

    import pandas as pd
    from helpers import REPO

    from fedsim.api import run
    from fedsim.config import load_scenario

    sets = ["stop.max_rounds=2", "data.sharing={global_size: 100, per_device: 20}"]
    res = run(load_scenario(REPO / "scenarios/quickstart.yaml", sets), tmp_path / "shared")
    meta = json.loads((res.path / "run.json").read_text())
    rows = pd.read_csv(res.path / "data_sharing.csv")
    devices = meta["scenario"]["topology"]["edges"]
    num_devices = sum(g["count"] for e in devices for g in e["devices"])
    assert list(rows["device_id"].value_counts().sort_index()) == [20] * num_devices
    ds = load_dataset("digits", None, meta["scenario"]["seed"])
    g = global_subset(ds.y_train, ds.num_classes, 100, meta["scenario"]["seed"])
    assert rows["train_row"].isin(g).all()
    sample = 8 * 64 // 2 + 8  # 64 float32 pixels and an int64 label
    assert meta["summary"]["shared_rows"] == 20 * num_devices
    assert meta["summary"]["shared_bytes_down"] == 20 * num_devices * sample
    plain = run(load_scenario(REPO / "scenarios/quickstart.yaml", sets[:1]), tmp_path / "plain")
    assert not (plain.path / "data_sharing.csv").exists()
    assert "shared_rows" not in json.loads((plain.path / "run.json").read_text())["summary"]


def test_per_device_above_global_size_is_a_scenario_error(tmp_path):
    from helpers import REPO

    from fedsim.config import load_scenario

    with pytest.raises(InputError, match=r"data\.sharing\.per_device: .*at most global_size"):
        load_scenario(REPO / "scenarios/quickstart.yaml",
                      ["data.sharing={global_size: 10, per_device: 20}"])  # fmt: skip
