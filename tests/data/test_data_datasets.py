"""Tests of the dataset loaders: digits, synthetic, and MNIST from IDX files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

from fedsim.data import Dataset, data_dir_from_env, load_dataset
from fedsim.data.mnist import MNIST_FILES, download_mnist, read_idx
from fedsim.errors import InputError

SHARED_DATA = shared_data_dir()
SHARED_MNIST = SHARED_DATA / "mnist"
needs_shared_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST files not present in {SHARED_MNIST}",
)


# --- IDX helpers ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10),
        "test": (rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for split, (img_name, lbl_name) in MNIST_FILES.items():
        for name, arr in ((img_name, arrays[split][0]), (lbl_name, arrays[split][1])):
            blob = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return arrays


# --- digits and synthetic ------------------------------------------------------------------


def check_dataset(ds: Dataset) -> None:
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.shape == (len(ds.y_train), *ds.input_shape)
    assert ds.x_test.shape == (len(ds.y_test), *ds.input_shape)
    assert ds.y_train.min() >= 0 and ds.y_train.max() < ds.num_classes


def test_digits_shapes_scale_and_stratified_split() -> None:
    ds = load_dataset("digits", None, seed=3)
    check_dataset(ds)
    assert ds.input_shape == (64,) and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert abs(len(ds.y_test) / 1797 - 0.2) < 0.01
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    # stratified: each class keeps ~20 % for test
    frac = np.bincount(ds.y_test) / (np.bincount(ds.y_test) + np.bincount(ds.y_train))
    assert np.all(np.abs(frac - 0.2) < 0.02)
    assert ds.users_train is None


def test_digits_split_depends_on_seed_only() -> None:
    a, b, c = (load_dataset("digits", None, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train) or not np.array_equal(a.x_train, c.x_train)


def test_synthetic_defaults_and_users() -> None:
    ds = load_dataset("synthetic", None, seed=0)
    check_dataset(ds)
    assert ds.input_shape == (60,) and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 6000
    assert ds.users_train is not None and ds.users_test is not None
    assert set(np.unique(ds.users_train)) == set(range(30)) == set(np.unique(ds.users_test))
    np.testing.assert_array_equal(np.bincount(ds.users_test), np.full(30, 40))
    # per-user skew: users' label distributions differ
    hist = np.stack([np.bincount(ds.y_train[ds.users_train == u], minlength=10) for u in range(30)])
    assert hist.argmax(axis=1).std() > 0


def test_synthetic_options_and_determinism() -> None:
    opts = {"num_samples": 500, "num_features": 5, "num_classes": 3, "num_users": 7}
    a = load_dataset("synthetic", None, seed=5, **opts)
    b = load_dataset("synthetic", None, seed=5, **opts)
    c = load_dataset("synthetic", None, seed=6, **opts)
    assert a.input_shape == (5,) and a.num_classes == 3
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.users_test, b.users_test)
    assert not np.array_equal(a.x_train, c.x_train)
    skewed = load_dataset("synthetic", None, seed=5, size_sigma=1.0, **opts)
    sizes = np.bincount(skewed.users_train) + np.bincount(skewed.users_test)
    assert sizes.sum() == 500 and sizes.min() >= 2 and sizes.max() > sizes.min()


@pytest.mark.parametrize(
    ("name", "options", "fragment"),
    [
        ("synthetic", {"bogus": 1}, "unknown option"),
        ("synthetic", {"num_users": 2.5}, "expected int"),
        ("synthetic", {"num_samples": 10, "num_users": 30}, "too few"),
        ("digits", {"num_users": 3}, "known options: none"),
    ],
)
def test_bad_options(name: str, options: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load_dataset(name, None, seed=0, **options)


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(InputError) as err:
        load_dataset("cifar100", None, seed=0)
    assert "digits" in str(err.value) and "mnist" in str(err.value)


def test_data_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "env"))
    assert data_dir_from_env(tmp_path / "x") == tmp_path / "x"
    assert data_dir_from_env(None) == tmp_path / "env"
    monkeypatch.delenv("FEDSIM_DATA")
    assert data_dir_from_env(None) == Path.home() / ".fedsim" / "data"


# --- MNIST from small generated IDX files --------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["mnist", ".", "MNIST/raw"])
def test_mnist_small_files(tmp_path: Path, gz: bool, layout: str) -> None:
    arrays = write_mnist(tmp_path / layout, gz=gz)
    ds = load_dataset("mnist", tmp_path, seed=0)
    check_dataset(ds)
    assert ds.input_shape == (784,) and ds.num_classes == 10
    assert ds.x_train.shape == (30, 784) and ds.x_test.shape == (10, 784)
    expected = (arrays["train"][0].reshape(30, 784) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test, arrays["test"][1])


def test_mnist_uses_fedsim_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path / "mnist")
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path))
    assert load_dataset("mnist", None, seed=0).x_train.shape == (30, 784)


def test_mnist_missing_files_says_where_and_what(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_dataset("mnist", tmp_path, seed=0)
    text = str(err.value)
    for folder in (tmp_path / "mnist", tmp_path, tmp_path / "MNIST" / "raw"):
        assert str(folder / "train-images-idx3-ubyte.gz") in text
    for pair in MNIST_FILES.values():
        for name in pair:
            assert name in text
    assert "FEDSIM_DATA" in text and "data.dir" in text and "download_mnist" in text


def test_mnist_one_missing_file(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError) as err:
        load_dataset("mnist", tmp_path, seed=0)
    assert "t10k-labels-idx1-ubyte: looked for" in str(err.value)
    assert "train-images-idx3-ubyte: looked for" not in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file_names_file_and_byte_counts(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    blob = path.read_bytes()[:-100]
    if gz:
        path.unlink()
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)
    expected = 16 + 30 * 28 * 28
    with pytest.raises(InputError) as err:
        load_dataset("mnist", tmp_path, seed=0)
    text = str(err.value)
    assert str(path) in text and "truncated" in text
    assert str(expected) in text and str(expected - 100) in text


def test_mnist_bad_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[3] = 0x03
    path.write_bytes(bytes(blob))
    with pytest.raises(InputError, match="bad magic number 0x00000803; expected 0x00000801"):
        load_dataset("mnist", tmp_path, seed=0)


def test_mnist_corrupt_gzip(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InputError, match="train-labels-idx1-ubyte.gz: cannot read"):
        load_dataset("mnist", tmp_path, seed=0)


def test_mnist_wrong_image_size_and_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(
        idx_bytes(np.zeros((10, 8, 8), dtype=np.uint8))
    )
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.zeros(29, dtype=np.uint8))
    )
    with pytest.raises(InputError) as err:
        load_dataset("mnist", tmp_path, seed=0)
    assert "8x8; expected 28x28" in str(err.value)
    assert "30 images" in str(err.value) and "29 labels" in str(err.value)


def test_read_idx_extra_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)) + b"\0")
    with pytest.raises(InputError, match="longer than its header says"):
        read_idx(path, 1)


# --- the real MNIST ------------------------------------------------------------------------


@needs_shared_mnist
def test_real_mnist_from_shared_folder() -> None:
    ds = load_dataset("mnist", SHARED_DATA, seed=0)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    np.testing.assert_array_equal(
        np.bincount(ds.y_train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert abs(float(ds.x_train.mean(dtype=np.float64))) < 1e-3
    assert abs(float(ds.x_train.std(dtype=np.float64)) - 1.0) < 1e-3


# --- download_mnist without network (file:// mirrors) ------------------------------------


@needs_shared_mnist
def test_download_mnist_from_a_local_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED_MNIST, mirror)
    dest = download_mnist(tmp_path / "data" / "mnist", mirrors=[mirror.as_uri() + "/"])
    for pair in MNIST_FILES.values():
        for name in pair:
            got = hashlib.sha256((dest / f"{name}.gz").read_bytes()).hexdigest()
            assert got == hashlib.sha256((mirror / f"{name}.gz").read_bytes()).hexdigest()
    # already present and verified: the mirror is not needed any more
    download_mnist(dest, mirrors=[(tmp_path / "nowhere").as_uri() + "/"])


def test_download_mnist_rejects_wrong_content(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mirror", gz=True)
    with pytest.raises(OSError) as err:
        download_mnist(
            tmp_path / "dest",
            mirrors=[(tmp_path / "nowhere").as_uri() + "/", (tmp_path / "mirror").as_uri() + "/"],
        )
    text = str(err.value)
    assert "md5 of the uncompressed content" in text and "nowhere" in text
    assert not list((tmp_path / "dest").iterdir())
