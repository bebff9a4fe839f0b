"""UCI HAR: small files in the standard layout (the official whitespace format) load as either
view with labels 0..5 and the volunteers as users, from a folder, a zip or the official
nested zip; ``split: per_user`` gives every volunteer train and test rows; the real label and
subject files (the shared small-files zip) are read right; missing, malformed and corrupt
files are errors naming the file; the downloader extracts from a file:// URL."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

import fedsim.data.har as har
from fedsim.cli import main
from fedsim.data import load_dataset, partition
from fedsim.data.har import download_uci_har
from fedsim.data.har_files import DATASET_FOLDER, INERTIAL_SIGNALS
from fedsim.errors import InputError

SMALL_ZIP = shared_data_dir() / "uci_har" / "UCI_HAR_Dataset_small_files.zip"


def fmt(v: float) -> str:
    """Format a value as the official files do: ' 2.8858451e-001' (3-digit exponent)."""
    mantissa, exp = f"{v: .7e}".split("e")
    return f"{mantissa}e{exp[0]}{int(exp[1:]):03d}"


def matrix_text(x: np.ndarray) -> str:
    return "".join(" " + " ".join(fmt(v) for v in row) + "\n" for row in x)


def ints_text(v: np.ndarray) -> str:
    return "".join(f"{int(i)}\n" for i in v)


def write_har(
    root: Path, subjects: dict[str, list[int]], per_subject: int = 12, seed: int = 0
) -> dict:
    """Write a small UCI HAR folder at ``root`` ('UCI HAR Dataset'); return what was written.

    Each subject gets ``per_subject`` rows cycling through the six activities.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for split, subs in subjects.items():
        s = np.repeat(np.array(subs), per_subject)
        y = np.tile(np.arange(1, 7), len(s) // 6 + 1)[: len(s)]
        x = np.round(rng.uniform(-1, 1, (len(s), 561)), 7)
        sig = np.round(rng.normal(0, 1, (len(s), 9, 128)) + np.arange(9)[None, :, None], 6)
        folder = root / split
        (folder / "Inertial Signals").mkdir(parents=True, exist_ok=True)
        (folder / f"X_{split}.txt").write_text(matrix_text(x))
        (folder / f"y_{split}.txt").write_text(ints_text(y))
        (folder / f"subject_{split}.txt").write_text(ints_text(s))
        for c, name in enumerate(INERTIAL_SIGNALS):
            path = folder / "Inertial Signals" / f"{name}_{split}.txt"
            path.write_text(matrix_text(sig[:, c]))
        out[split] = (x, y, s, sig)
    (root / "features.txt").write_text("".join(f"{i} f{i}\n" for i in range(1, 562)))
    (root / "activity_labels.txt").write_text(
        "".join(f"{i} {n}\n" for i, n in enumerate(har.ACTIVITY_NAMES, 1))
    )
    return out


SUBJECTS = {"train": [1, 3, 5], "test": [2, 4]}


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, dict]:
    written = write_har(tmp_path / "data" / "uci_har" / DATASET_FOLDER, SUBJECTS)
    return tmp_path / "data", written


def test_engineered_view_shapes_labels_users(data_dir) -> None:
    data, written = data_dir
    ds = load_dataset("uci_har", data, seed=0)
    x, y, s, _ = written["train"]
    assert ds.name == "uci_har" and ds.num_classes == 6 and ds.input_shape == (561,)
    assert ds.x_train.shape == (36, 561) and ds.x_test.shape == (24, 561)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train, x, atol=1e-7)  # engineered: kept as published
    np.testing.assert_array_equal(ds.y_train, y - 1)
    assert set(ds.y_train) == set(range(6))
    np.testing.assert_array_equal(ds.users_train, s)
    np.testing.assert_array_equal(np.unique(ds.users_test), [2, 4])


def test_inertial_view_channel_order_and_train_standardisation(data_dir) -> None:
    data, written = data_dir
    raw = har.load_har_arrays(data, "inertial")
    _, _, _, sig_train = written["train"]
    np.testing.assert_allclose(raw["train"][0], sig_train, atol=1e-6)  # README's order
    ds = load_dataset("uci_har", data, seed=0, features="inertial")
    assert ds.input_shape == (9, 128) and ds.x_train.shape == (36, 9, 128)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2)), 1, atol=1e-4)
    mean = sig_train.mean(axis=(0, 2))[None, :, None]
    std = sig_train.std(axis=(0, 2))[None, :, None]
    np.testing.assert_allclose(ds.x_test, (written["test"][3] - mean) / std, atol=1e-4)


def test_per_user_split_gives_every_subject_train_and_test(data_dir) -> None:
    data, _ = data_dir
    ds = load_dataset("uci_har", data, seed=3, split="per_user", test_fraction=0.25)
    assert len(ds.y_train) + len(ds.y_test) == 60
    for subject in (1, 2, 3, 4, 5):
        assert (ds.users_train == subject).sum() == 9 and (ds.users_test == subject).sum() == 3
    again = load_dataset("uci_har", data, seed=3, split="per_user")
    other = load_dataset("uci_har", data, seed=4, split="per_user")
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert not np.array_equal(ds.x_test, other.x_test)
    parts = partition(ds, 5, "natural", np.random.default_rng(0))
    assert all(len(p.train_idx) == 9 and len(p.test_idx) == 3 for p in parts)


def test_official_split_cannot_be_partitioned_naturally(data_dir) -> None:
    ds = load_dataset("uci_har", data_dir[0], seed=0)
    with pytest.raises(InputError, match="split: per_user"):
        partition(ds, 5, "natural", np.random.default_rng(0))


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, prefix + path.relative_to(folder.parent).as_posix())
    return buf.getvalue()


@pytest.mark.parametrize("nested", [False, True])
def test_a_zip_or_the_official_nested_zip_loads_the_same(tmp_path: Path, nested: bool) -> None:
    folder = tmp_path / "src" / DATASET_FOLDER
    write_har(folder, SUBJECTS)
    inner = zip_folder(folder)
    blob = inner
    if nested:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(f"{DATASET_FOLDER}.zip", inner)
        blob = buf.getvalue()
    (tmp_path / "data" / "uci_har").mkdir(parents=True)
    (tmp_path / "data" / "uci_har" / "har.zip").write_bytes(blob)
    from_zip = load_dataset("uci_har", tmp_path / "data", seed=0, features="inertial")
    from_folder = load_dataset("uci_har", tmp_path / "src", seed=0, features="inertial")
    np.testing.assert_array_equal(from_zip.x_train, from_folder.x_train)
    np.testing.assert_array_equal(from_zip.y_test, from_folder.y_test)


def small_files_layout(root: Path) -> None:
    """Extract the shared small-files zip (labels, subjects, names) under ``root``."""
    with zipfile.ZipFile(SMALL_ZIP) as z:
        z.extractall(root)


@pytest.fixture
def real_labels(tmp_path: Path) -> Path:
    if not SMALL_ZIP.is_file():
        pytest.skip(f"{SMALL_ZIP} not present")
    small_files_layout(tmp_path / "data" / "uci_har")
    return tmp_path / "data"


def test_real_labels_and_subjects_are_read_right(real_labels: Path) -> None:
    # the real y/subject files with generated X files of their row counts
    folder = real_labels / "uci_har" / DATASET_FOLDER
    row = " " + " ".join([fmt(0.5)] * 561) + "\n"
    for split, n in (("train", 7352), ("test", 2947)):
        (folder / split / f"X_{split}.txt").write_text(row * n)
    ds = load_dataset("uci_har", real_labels, seed=0)
    assert len(ds.y_train) == 7352 and len(ds.y_test) == 2947
    assert np.bincount(ds.y_train).tolist() == [1226, 1073, 986, 1286, 1374, 1407]
    assert np.bincount(ds.y_test).tolist() == [496, 471, 420, 491, 532, 537]
    assert len(np.unique(ds.users_train)) == 21 and len(np.unique(ds.users_test)) == 9
    assert np.unique(ds.users_test).tolist() == [2, 4, 9, 10, 12, 13, 18, 20, 24]
    pooled = load_dataset("uci_har", real_labels, seed=1, split="per_user")
    assert len(pooled.y_train) + len(pooled.y_test) == 10_299
    parts = partition(pooled, 30, "natural", np.random.default_rng(0))
    assert min(len(p.test_idx) for p in parts) == 70 and min(len(p.train_idx) for p in parts) == 211


def test_only_the_small_files_is_a_clear_error(tmp_path: Path) -> None:
    if not SMALL_ZIP.is_file():
        pytest.skip(f"{SMALL_ZIP} not present")
    (tmp_path / "uci_har").mkdir()
    (tmp_path / "uci_har" / SMALL_ZIP.name).write_bytes(SMALL_ZIP.read_bytes())
    with pytest.raises(InputError) as err:
        load_dataset("uci_har", tmp_path, seed=0)
    text = str(err.value)
    assert f"{SMALL_ZIP.name}:{DATASET_FOLDER}/: missing train/X_train.txt, test/X_test.txt" in text
    assert "only the small files" in text and "download_uci_har" in text
    assert f"{tmp_path / 'uci_har' / DATASET_FOLDER}/: no such folder" in text


def test_missing_file_exits_2_through_the_cli_naming_it(data_dir, tmp_path: Path, capsys) -> None:
    data, _ = data_dir
    (
        data / "uci_har" / DATASET_FOLDER / "test" / "Inertial Signals" / "body_gyro_y_test.txt"
    ).unlink()
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"name: s\nseed: 1\nmodel: perfit_cnn\ndata: {{dataset: uci_har, dir: '{data}', "
        "options: {features: inertial, split: per_user}, partition: {kind: natural}}\n"
        "topology: {edges: [{name: e, devices: [{hardware: rpi4, link: wifi, count: 5}]}]}\n"
    )
    assert main(["validate", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert "missing test/Inertial Signals/body_gyro_y_test.txt" in err


@pytest.mark.parametrize(
    ("rel", "text", "fragment"),
    [
        ("train/X_train.txt", " 0.1 0.2\n", "X_train.txt: line 1 has 2 values; expected 561"),
        ("train/X_train.txt", (" x" * 561 + "\n") * 36, "X_train.txt: expected only finite"),
        (
            "train/y_train.txt",
            "7\n" * 36,
            "y_train.txt: line 1 holds 7; expected an integer in 1..6",
        ),
        ("test/subject_test.txt", "2\n" * 23, "subject_test.txt has 23 rows but"),
        ("test/Inertial Signals/total_acc_z_test.txt", (" 1.0" * 128 + "\n") * 5, "has 5 rows"),
    ],
)
def test_malformed_files_are_named(data_dir, rel: str, text: str, fragment: str) -> None:
    data, _ = data_dir
    (data / "uci_har" / DATASET_FOLDER / rel).write_text(text)
    features = "inertial" if "Inertial" in rel else "engineered"
    with pytest.raises(InputError, match=fragment):
        load_dataset("uci_har", data, seed=0, features=features)


def test_a_label_file_of_the_published_length_but_other_content_is_corrupt(real_labels) -> None:
    folder = real_labels / "uci_har" / DATASET_FOLDER
    raw = (folder / "test" / "y_test.txt").read_bytes()
    swapped = (b"1" if raw[:1] != b"1" else b"2") + raw[1:]  # same length, one label changed
    (folder / "test" / "y_test.txt").write_bytes(swapped)
    row = " " + " ".join([fmt(0.5)] * 561) + "\n"
    for split, n in (("train", 7352), ("test", 2947)):
        (folder / split / f"X_{split}.txt").write_text(row * n)
    with pytest.raises(InputError, match=r"y_test.txt: corrupt: .*sha256"):
        load_dataset("uci_har", real_labels, seed=0)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"features": "raw"}, "data.options.features: expected engineered or inertial"),
        ({"split": "random"}, "data.options.split: expected official or per_user"),
        ({"test_fraction": 1.0}, "data.options.test_fraction: expected 0 < value < 1"),
        ({"test_fraction": "a"}, "data.options.test_fraction: expected float"),
        ({"features": 3}, "data.options.features: expected a string"),
        ({"num_users": 3}, "unknown option for dataset 'uci_har'"),
    ],
)
def test_bad_options(data_dir, options: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load_dataset("uci_har", data_dir[0], seed=0, **options)


def test_download_extracts_the_nested_zip_from_a_file_url(tmp_path: Path) -> None:
    folder = tmp_path / "src" / DATASET_FOLDER
    written = write_har(folder, SUBJECTS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{DATASET_FOLDER}.zip", zip_folder(folder))
        z.writestr("__MACOSX/._x", b"")
    archive = tmp_path / "official.zip"
    archive.write_bytes(buf.getvalue())
    dest = tmp_path / "data" / "uci_har"
    got = download_uci_har(dest, url=archive.as_uri())
    assert got == dest / DATASET_FOLDER and not list(dest.glob(".*part"))
    ds = load_dataset("uci_har", tmp_path / "data", seed=0)
    np.testing.assert_allclose(ds.x_train, written["train"][0], atol=1e-7)
    digest = hashlib.sha256((got / "train" / "X_train.txt").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((folder / "train" / "X_train.txt").read_bytes()).hexdigest()
    assert download_uci_har(dest, url="file:///nonexistent") == got  # present: no download


def test_download_refuses_a_zip_without_the_dataset(tmp_path: Path) -> None:
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(OSError, match="holds no UCI HAR Dataset/ folder"):
        download_uci_har(tmp_path / "dest", url=archive.as_uri())
    assert not list((tmp_path / "dest").iterdir())
