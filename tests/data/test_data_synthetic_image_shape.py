"""The synthetic dataset's image_shape option: inputs reshaped to [C, H, W], its product
num_features; the values are those of the flat dataset; a wrong shape is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from fedsim.config import load_scenario
from fedsim.data import load_dataset
from fedsim.errors import InputError
from fedsim.models.zoo import build_model

OPTS = {"num_samples": 400, "num_features": 48, "num_users": 4}


def test_image_shape_reshapes_the_flat_inputs() -> None:
    flat = load_dataset("synthetic", None, seed=3, **OPTS)
    img = load_dataset("synthetic", None, seed=3, image_shape=[3, 4, 4], **OPTS)
    assert img.input_shape == (3, 4, 4) and flat.input_shape == (48,)
    assert img.x_train.shape == (len(img.y_train), 3, 4, 4) and img.x_train.dtype == np.float32
    assert img.x_test.shape == (len(img.y_test), 3, 4, 4)
    np.testing.assert_array_equal(img.x_train.reshape(len(img.y_train), -1), flat.x_train)
    np.testing.assert_array_equal(img.x_test.reshape(len(img.y_test), -1), flat.x_test)
    np.testing.assert_array_equal(img.y_train, flat.y_train)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ([3, 4, 5], "[3, 4, 5] holds 60 values but num_features is 48; they must be equal"),
        ([], "expected a non-empty list of positive integers"),
        ([3, 0, 16], "expected a non-empty list of positive integers"),
        ([3, "4", 4], "data.options.image_shape: expected a list of integers"),
        (48, "data.options.image_shape: expected a list of integers, got 48"),
    ],
)
def test_bad_image_shape(shape: object, fragment: str) -> None:
    with pytest.raises(InputError) as err:
        load_dataset("synthetic", None, seed=0, image_shape=shape, **OPTS)
    assert fragment in str(err.value)


def test_cifar_shaped_synthetic_fits_mtfl_cnn() -> None:
    ds = load_dataset(
        "synthetic", None, seed=0, num_samples=200, num_features=3072,
        image_shape=[3, 32, 32], num_users=10,
    )  # fmt: skip
    assert ds.x_train.shape[1:] == (3, 32, 32)
    import torch

    out = build_model("mtfl_cnn", ds.input_shape, ds.num_classes)(torch.from_numpy(ds.x_test))
    assert out.shape == (len(ds.y_test), 10)


def test_shipped_cifar_shaped_scenario_gives_whole_batches() -> None:
    # the scenario's sizes, checked without generating its 32,000 x 3,072 values
    sc = load_scenario(REPO / "scenarios" / "mtfl" / "cifar_cnn_synthetic.yaml")
    opts = sc.data.options
    assert opts["image_shape"] == [3, 32, 32] and opts["num_features"] == 3072
    n, users, test_fraction = opts["num_samples"], opts["num_users"], opts["test_fraction"]
    assert n % users == 0
    train = n - users * round(n // users * test_fraction)
    devices = sc.topology.num_devices()
    assert devices == 200 and train % (2 * devices) == 0
    assert (train // devices) % sc.algorithm.params["batch_size"] == 0
