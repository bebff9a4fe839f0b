"""CIFAR-10 from its python batches: tiny files in the standard layout (pickled dicts with
byte-string keys, protocol 2, like the real ones) load with the right shapes, labels, scale
and order; missing, malformed, unsafe and corrupt files are clear errors; the downloader
verifies and extracts (from a file:// URL); a cifar10 + mtfl_cnn scenario runs a round."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

import fedsim.data.cifar10 as cifar10
from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.data import load_dataset
from fedsim.data.partition import partition
from fedsim.errors import InputError

N = 50  # images per tiny batch (the real ones hold 10,000)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_batch(path: Path, images: np.ndarray, labels: list[int], name: str) -> None:
    """Pickle one batch as the real files are: a dict with byte-string keys, protocol 2."""
    batch = {
        b"batch_label": name.encode(),
        b"labels": labels,
        b"data": images,
        b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar(folder: Path, n: int = N, n_test: int = N) -> dict[str, np.ndarray]:
    """Write data_batch_1..5, test_batch and batches.meta of random images into ``folder``."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
        count = n_test if name == cifar10.TEST_FILE else n
        images = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, count)
        write_batch(folder / name, images, [int(v) for v in labels], name)
        out[name], out[f"{name}/labels"] = images, labels
    meta = {b"label_names": [c.encode() for c in cifar10.CLASS_NAMES], b"num_vis": 3072}
    (folder / cifar10.META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    return out


def py2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """Return a batch pickled as the published files are: by Python 2's cPickle, protocol
    2, str keys and data (SHORT_BINSTRING, BINSTRING), numpy.core.multiarray._reconstruct."""
    parts = [b"\x80\x02}(U\x06labels](", *(b"K" + bytes([v]) for v in labels), b"eU\x04data"]
    parts += [
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R",
        b"(K\x01M" + struct.pack("<H", len(images)) + b"M\x00\x0c\x86",
        b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK\x00tb",
        b"\x89T" + struct.pack("<i", images.nbytes) + images.tobytes() + b"tbu.",
    ]
    return b"".join(parts)


# --- loading --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["cifar10/cifar-10-batches-py", "cifar-10-batches-py"])
def test_shapes_labels_scale_and_order(tmp_path: Path, layout: str) -> None:
    # Arrange: one known pixel: image 0 of batch 1, green plane, row 5, column 7
    arrays = write_cifar(tmp_path / layout)
    first = arrays["data_batch_1"].copy()
    first[0, :] = 0
    first[0, 1024 + 5 * 32 + 7] = 255
    labels = [int(v) for v in arrays["data_batch_1/labels"]]
    write_batch(tmp_path / layout / "data_batch_1", first, labels, "data_batch_1")

    # Act
    ds = load_dataset("cifar10", tmp_path, seed=0)

    # Assert
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.x_train.shape == (5 * N, 3, 32, 32) and ds.x_test.shape == (N, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.y_test.dtype == np.int64
    # batches 1..5 in order, rows in file order, (3, 32, 32) = planes of row-major pixels
    train = np.concatenate([first] + [arrays[n] for n in cifar10.TRAIN_FILES[1:]])
    np.testing.assert_array_equal(ds.x_train, train.reshape(-1, 3, 32, 32) / np.float32(255))
    np.testing.assert_array_equal(
        ds.y_train, np.concatenate([arrays[f"{n}/labels"] for n in cifar10.TRAIN_FILES])
    )
    np.testing.assert_array_equal(ds.y_test, arrays["test_batch/labels"])
    assert ds.x_train[0].sum() == 1.0 and ds.x_train[0, 1, 5, 7] == 1.0
    # scaled to [0, 1], each channel alike: 0 -> 0, 255 -> 1
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    np.testing.assert_allclose(ds.x_test * 255, arrays["test_batch"].reshape(-1, 3, 32, 32))


def test_a_python2_pickle_like_the_published_files_loads(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    images = np.random.default_rng(1).integers(0, 256, (7, 3072), dtype=np.uint8)
    labels = [3, 9, 0, 1, 2, 8, 5]
    (folder / "test_batch").write_bytes(py2_batch(images, labels))
    ds = load_dataset("cifar10", tmp_path, seed=0)
    assert ds.y_test.tolist() == labels
    np.testing.assert_array_equal(ds.x_test * 255, images.reshape(7, 3, 32, 32))


def test_data_dir_is_fedsim_data_or_data_dir(tmp_path: Path, monkeypatch) -> None:
    write_cifar(tmp_path / "env" / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "env"))
    assert load_dataset("cifar10", None, seed=0).x_train.shape == (5 * N, 3, 32, 32)
    # data.dir pointing at the batches folder itself works too
    folder = tmp_path / "env" / "cifar10" / "cifar-10-batches-py"
    assert load_dataset("cifar10", folder, seed=0).x_test.shape == (N, 3, 32, 32)


def test_missing_folder_says_where_and_what(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", tmp_path / "nowhere", seed=0)
    text = str(err.value)
    assert "CIFAR-10 files not found" in text and "data_batch_1" in text and "test_batch" in text
    for folder in cifar10.search_dirs(tmp_path / "nowhere"):
        assert f"{folder}: no such folder" in text
    assert str(tmp_path / "nowhere" / "cifar10" / "cifar-10-batches-py") in text
    assert "FEDSIM_DATA" in text and "data.dir" in text and "download_cifar10" in text


def test_one_missing_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", tmp_path, seed=0)
    assert f"{folder}: missing data_batch_3\n" in str(err.value)


def test_batches_meta_is_not_needed(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    assert load_dataset("cifar10", tmp_path, seed=0).y_test.shape == (N,)


@pytest.mark.parametrize(
    ("batch", "fragment"),
    [
        (b"not a pickle", "cannot read as a pickled CIFAR-10 batch"),
        ([1, 2], "expected a pickled dict with keys b'data' and b'labels', got list"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "found b'data'"),
        ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "uint8 of shape (n, 3072)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "float32 of shape"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10 out of range"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"a", b"b"]}, "list of integers"),
    ],
)
def test_malformed_batch_names_the_file(tmp_path: Path, batch: object, fragment: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    path = folder / "test_batch"
    path.write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=2))
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", tmp_path, seed=0)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_truncated_batch_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    path = folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="data_batch_2: cannot read as a pickled CIFAR-10"):
        load_dataset("cifar10", tmp_path, seed=0)


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.target),))


def test_a_pickle_naming_other_code_is_refused_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    target = tmp_path / "was-run"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Payload(target)]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", tmp_path, seed=0)
    assert "names posix.mkdir" in str(err.value) and "not loaded" in str(err.value)
    assert not target.exists()


def test_a_full_batch_that_is_not_the_published_file_is_corrupt(tmp_path: Path) -> None:
    # a batch of the published size (10,000 images) must be the published file (md5)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    images = np.zeros((cifar10.BATCH_IMAGES, 3072), np.uint8)
    write_batch(folder / "data_batch_1", images, [0] * cifar10.BATCH_IMAGES, "data_batch_1")
    with pytest.raises(InputError) as err:
        load_dataset("cifar10", tmp_path, seed=0)
    (line,) = err.value.problems
    assert line.startswith(f"{folder / 'data_batch_1'}: corrupt: not the published CIFAR-10")
    assert "expected c99cafc152244af753f735de768cd75f" in line


def test_shards_partition_cifar10(tmp_path: Path) -> None:
    # 250 train images, 20 shards of 12-13 label-sorted images over 10 devices
    write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, seed=0)
    parts = partition(ds, 10, "shards", np.random.default_rng(1), shards_per_device=2)
    train = np.sort(np.concatenate([p.train_idx for p in parts]))
    np.testing.assert_array_equal(train, np.arange(5 * N))
    for p in parts:
        assert len(p.train_idx) in (24, 25, 26)
        assert len(np.unique(ds.y_train[p.train_idx])) <= 4  # 2 shards, each <= 2 labels
        assert set(ds.y_test[p.test_idx]) <= set(ds.y_train[p.train_idx])


# --- download_cifar10 without network (file:// URLs) ----------------------------------------


def make_archive(tmp_path: Path) -> Path:
    """Return a .tar.gz laid out like the official archive, holding tiny batches."""
    src = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
        readme = b"<html></html>"
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return archive


def test_download_verifies_md5_and_extracts(tmp_path: Path, monkeypatch) -> None:
    archive = make_archive(tmp_path)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    folder = cifar10.download_cifar10(tmp_path / "data" / "cifar10", url=archive.as_uri())
    assert folder == tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(cifar10.FILE_MD5)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cifar-10-batches-py"]
    src = tmp_path / "src" / "cifar-10-batches-py"
    for name in cifar10.FILE_MD5:
        assert (folder / name).read_bytes() == (src / name).read_bytes()
    assert load_dataset("cifar10", tmp_path / "data", seed=0).x_train.shape[0] == 5 * N


def test_download_rejects_another_archive(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    with pytest.raises(OSError) as err:
        cifar10.download_cifar10(tmp_path / "dest", url=archive.as_uri())
    assert f"expected {cifar10.ARCHIVE_MD5}" in str(err.value)
    assert not list((tmp_path / "dest").iterdir())


# --- a scenario ---------------------------------------------------------------------------


def test_cifar_cnn_scenario_runs_a_round_on_tiny_files(tmp_path: Path) -> None:
    # Arrange: the shipped CIFAR-10 scenario on the tiny files, 10 devices, 1 round
    write_cifar(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    scenario = load_scenario(
        REPO / "scenarios" / "mtfl" / "cifar_cnn.yaml",
        [
            f"data.dir={tmp_path / 'data'}",
            "topology.edges.0.devices.0.count=5",
            "topology.edges.0.devices.1.count=5",
            "stop.max_rounds=1",
        ],
    )
    assert scenario.data.dataset == "cifar10" and scenario.model == "mtfl_cnn"

    # Act
    result = run(scenario, tmp_path / "out")

    # Assert
    rounds = result.rounds
    assert rounds["version"].tolist() == [1] and rounds["round"].tolist() == [0]
    assert 0.0 <= float(rounds["ua_mean"].iloc[0]) <= 1.0
    done = result.device_rounds[result.device_rounds["status"] == "completed"]
    assert len(done) == 5 and (done["bytes_up"] == 4_820_264).all()
