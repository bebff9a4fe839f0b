"""CIFAR-10: read the standard python batches (pickled dicts), validated, and a downloader.

The python version of CIFAR-10 (Krizhevsky, https://www.cs.toronto.edu/~kriz/cifar.html)
is the folder ``cifar-10-batches-py`` holding ``data_batch_1`` .. ``data_batch_5`` (the
50,000 training images, in that order), ``test_batch`` (10,000) and ``batches.meta`` (the
class names, not needed here). Each batch is a pickled dict: ``b"data"`` a uint8 array of
shape ``(n, 3072)`` (the red, green and blue planes of a 32x32 image, each row-major) and
``b"labels"`` n ints in 0..9.

The batches are unpickled by a restricted unpickler that builds only numpy arrays, lists,
bytes and numbers (a pickle naming anything else is refused, not run). A batch of the
published 10,000 images is checked against the published md5 of its file on first load
(the result cached, fedsim/data/checksums.py; the publisher gives md5 only); a batch of
another size (a subset, a test fixture) has only its structure checked.

Inputs are scaled to [0, 1] (``pixel / 255``), each channel alike, as MTFL's authors do
(their ``data_utils.load_cifar`` divides by 255 and subtracts no mean); MTFL's noisy
clients (Table 3: Gaussian noise of std 0.2 on CIFAR-10) are in these units.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.checksums import VerifiedFiles, file_key
from fedsim.data.datasets import Dataset
from fedsim.errors import InputError

IMAGE_SHAPE = (3, 32, 32)
IMAGE_VALUES = 3 * 32 * 32
NUM_CLASSES = 10
CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

#: The folder the official archive extracts to.
BATCHES_FOLDER = "cifar-10-batches-py"
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
#: The files the loader needs (``batches.meta`` only names the classes).
REQUIRED_FILES: tuple[str, ...] = (*TRAIN_FILES, TEST_FILE)
#: Images in each published batch file.
BATCH_IMAGES = 10_000

#: md5 of each file of the official archive (the values torchvision checks).
FILE_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

#: The official archive and its published md5.
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"


def search_dirs(data_dir: Path) -> list[Path]:
    """Return the folders searched for the CIFAR-10 batches, in order.

    ``<data_dir>/cifar10/cifar-10-batches-py`` (where :func:`download_cifar10` puts them
    when given ``<data_dir>/cifar10``), ``<data_dir>/cifar-10-batches-py``, then
    ``<data_dir>/cifar10`` and ``<data_dir>`` themselves.
    """
    return [
        data_dir / "cifar10" / BATCHES_FOLDER,
        data_dir / BATCHES_FOLDER,
        data_dir / "cifar10",
        data_dir,
    ]


def find_folder(data_dir: Path) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """Return the first folder of :func:`search_dirs` that holds every required file.

    Returns
    -------
    folder : Path or None
        The folder, or None if none holds them all.
    looked : list of (Path, list of str)
        Each folder looked at before it, with the required files it lacks (all of them
        for a folder that does not exist).
    """
    looked: list[tuple[Path, list[str]]] = []
    for folder in search_dirs(data_dir):
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if not missing:
            return folder, looked
        looked.append((folder, missing))
    return None, looked


def missing_files_message(data_dir: Path, looked: list[tuple[Path, list[str]]]) -> list[str]:
    """Return the lines of the error for missing CIFAR-10 files."""
    lines = [
        f"CIFAR-10 files not found under {data_dir}: no folder holds all of "
        + ", ".join(REQUIRED_FILES)
        + ":"
    ]
    for folder, missing in looked:
        if not folder.is_dir():
            lines.append(f"  {folder}: no such folder")
        else:
            lines.append(f"  {folder}: missing " + ", ".join(missing))
    target = data_dir / "cifar10"
    lines += [
        "Put the python version of CIFAR-10 (cifar-10-python.tar.gz from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html, extracted) in {target}, so that "
        f"{target / BATCHES_FOLDER} holds " + ", ".join(REQUIRED_FILES) + ".",
        "The data folder is the scenario's data.dir, else $FEDSIM_DATA, else ~/.fedsim/data.",
        "With network access, fedsim.data.cifar10.download_cifar10(Path("
        f"{str(target)!r})) downloads, verifies and extracts them.",
    ]
    return lines


@functools.cache
def _numpy_builders() -> dict[tuple[str, str], Callable[..., Any]]:
    """Return the callables a pickled numpy array or scalar may name, by (module, name)."""
    reconstruct: Callable[..., Any] = np.zeros(1, dtype=np.uint8).__reduce__()[0]  # type: ignore[assignment]
    scalar: Callable[..., Any] = np.int64(0).__reduce__()[0]  # type: ignore[assignment]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in a Python 3 pickle of protocol < 3
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and scalars besides plain values."""

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed callable ``module.name``; refuse any other."""
        found = _numpy_builders().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}; a CIFAR-10 batch holds only numpy arrays, "
                "lists, bytes and numbers, so it is not loaded"
            )
        return found


def unpickle_batch(raw: bytes, path: Path) -> Any:
    """Return the object pickled in ``raw`` (the content of ``path``), restricted.

    Raises
    ------
    InputError
        If ``raw`` is not a pickle, is truncated, or names anything but numpy's array
        and scalar builders.
    """
    try:
        return _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
        IndexError, KeyError, OverflowError, MemoryError,
    ) as exc:  # fmt: skip
        raise InputError(
            f"{path}: cannot read as a pickled CIFAR-10 batch ({exc or type(exc).__name__})"
        ) from None


def _entry(batch: dict[Any, Any], key: str) -> Any:
    """Return ``batch[b"key"]`` (or ``batch["key"]``), or None."""
    return batch.get(key.encode(), batch.get(key))


def batch_arrays(batch: Any, path: Path) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """Return a batch's images, labels and problems (one line each; arrays None if bad).

    Returns
    -------
    images : np.ndarray or None
        uint8 ``(n, 3072)``.
    labels : np.ndarray or None
        int64 ``(n,)`` in ``0..9``.
    problems : list of str
        Each naming ``path`` and what was expected.
    """
    if not isinstance(batch, dict):
        return None, None, [
            f"{path}: not a CIFAR-10 batch: expected a pickled dict with keys b'data' and "
            f"b'labels', got {type(batch).__name__}"
        ]  # fmt: skip
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if data is None or labels is None:
        keys = ", ".join(sorted(repr(k) for k in batch)) or "none"
        return (
            None,
            None,
            [f"{path}: not a CIFAR-10 batch: expected keys b'data' and b'labels', found {keys}"],
        )
    problems = []
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == IMAGE_VALUES
    ):
        got = (
            f"{data.dtype} of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        problems.append(
            f"{path}: b'data' is {got}; expected uint8 of shape (n, {IMAGE_VALUES}) (the red, "
            "green and blue planes of a 32x32 image per row)"
        )
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError):
        y = np.asarray(None)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        problems.append(f"{path}: b'labels' is not a list of integers")
    elif y.size and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        problems.append(f"{path}: label {bad} out of range 0..{NUM_CLASSES - 1}")
    elif not problems and len(y) != len(data):
        problems.append(
            f"{path} has {len(data)} images but {len(y)} labels; expected the same count"
        )
    if problems:
        return None, None, problems
    return data, y.astype(np.int64), []


def read_batch(
    path: Path, name: str, verified: VerifiedFiles
) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """Read the CIFAR-10 batch file ``name`` at ``path``; check a full batch's md5.

    Returns
    -------
    images, labels, problems
        As :func:`batch_arrays`; a batch of the published 10,000 images whose file is not
        the published one (md5) adds a problem naming it.

    Raises
    ------
    InputError
        If the file cannot be read or unpickled.
    """
    try:
        key = file_key(path)
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    images, labels, problems = batch_arrays(unpickle_batch(raw, path), path)
    if images is None or len(images) != BATCH_IMAGES:
        return images, labels, problems
    expected = FILE_MD5[name]
    got = verified.mismatch(key, raw, expected, "md5")
    if got is not None:
        problems.append(
            f"{path}: corrupt: not the published CIFAR-10 file {name} (md5 {got}, expected "
            f"{expected}); replace it, e.g. with fedsim.data.cifar10.download_cifar10, which "
            "verifies what it downloads"
        )
    return images, labels, problems


def load_cifar10_arrays(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and validate the six CIFAR-10 batches.

    Returns
    -------
    dict
        ``{"train": (images, labels), "test": (images, labels)}``: images uint8
        ``(n, 3072)`` (training batches 1 to 5 in order, rows in file order), labels int64.

    Raises
    ------
    InputError
        Naming every missing file with the folders looked at, the first file that cannot
        be read or unpickled, or every malformed or corrupt batch.
    """
    folder, looked = find_folder(data_dir)
    if folder is None:
        raise InputError(missing_files_message(data_dir, looked))
    verified = VerifiedFiles.load()
    problems: list[str] = []
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for split, names in (("train", TRAIN_FILES), ("test", (TEST_FILE,))):
        for name in names:
            images, labels, bad = read_batch(folder / name, name, verified)
            problems += bad
            if images is not None and labels is not None:
                parts[split].append((images, labels))
    verified.save()
    if problems:
        raise InputError(problems)
    return {
        split: (
            np.concatenate([images for images, _ in batches]),
            np.concatenate([labels for _, labels in batches]),
        )
        for split, batches in parts.items()
    }


def to_inputs(images: np.ndarray) -> np.ndarray:
    """Return uint8 rows of 3072 as float32 ``(n, 3, 32, 32)`` scaled to [0, 1]."""
    x = images.reshape(len(images), *IMAGE_SHAPE).astype(np.float32)
    x /= np.float32(255.0)
    return x


def load_cifar10(data_dir: Path) -> Dataset:
    """Return CIFAR-10: float32 inputs ``(3, 32, 32)`` scaled to [0, 1], 10 classes.

    Parameters
    ----------
    data_dir : Path
        The data folder; the batches are looked for in the folders of
        :func:`search_dirs` (first ``<data_dir>/cifar10/cifar-10-batches-py``).
    """
    arrays = load_cifar10_arrays(data_dir)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return Dataset(
        name="cifar10",
        x_train=to_inputs(xtr),
        y_train=ytr,
        x_test=to_inputs(xte),
        y_test=yte,
        num_classes=NUM_CLASSES,
        input_shape=IMAGE_SHAPE,
    )


def _folder_verified(folder: Path) -> bool:
    """Return True if ``folder`` holds every file of the archive with its published md5."""
    for name, md5 in FILE_MD5.items():
        try:
            if hashlib.md5((folder / name).read_bytes()).hexdigest() != md5:
                return False
        except OSError:
            return False
    return True


def download_cifar10(dest: Path, url: str = ARCHIVE_URL, timeout_s: float = 60.0) -> Path:
    """Download the official archive into ``dest``, verify its md5 and extract the batches.

    The archive (163 MB) is written under a temporary name, checked against its published
    md5 (``ARCHIVE_MD5``), and only the files of ``cifar-10-batches-py/`` the loader knows
    (``FILE_MD5``) are extracted, each under a temporary name and renamed; the archive is
    deleted afterwards. A folder already holding every file with its published md5 is
    kept and nothing is downloaded.

    Parameters
    ----------
    dest : Path
        Target folder (created if needed), e.g. ``<data_dir>/cifar10``; the files land in
        ``dest/cifar-10-batches-py``, where :func:`load_cifar10` looks first.
    url : str
        Where the archive is (the official URL by default).
    timeout_s : float
        Timeout of the request in seconds.

    Returns
    -------
    Path
        ``dest / "cifar-10-batches-py"``.

    Raises
    ------
    OSError
        If the archive cannot be downloaded, has another md5, or lacks a file.
    """
    dest = Path(dest)
    folder = dest / BATCHES_FOLDER
    if _folder_verified(folder):
        return folder
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ".cifar-10-python.tar.gz.part"
    try:
        md5 = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout_s) as response, archive.open("wb") as f:
            while chunk := response.read(1 << 20):
                md5.update(chunk)
                f.write(chunk)
        if md5.hexdigest() != ARCHIVE_MD5:
            raise OSError(
                f"could not download CIFAR-10: {url}: md5 of the archive is {md5.hexdigest()}, "
                f"expected {ARCHIVE_MD5}"
            )
        _extract(archive, folder)
    finally:
        archive.unlink(missing_ok=True)
    return folder


def _extract(archive: Path, folder: Path) -> None:
    """Extract the known files of ``cifar-10-batches-py/`` from ``archive`` into ``folder``."""
    wanted = {f"{BATCHES_FOLDER}/{name}": name for name in FILE_MD5}
    found = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{name}.part"
                tmp.write_bytes(source.read())
                os.replace(tmp, folder / name)
                found.add(name)
    except (tarfile.TarError, EOFError) as exc:
        raise OSError(f"could not extract CIFAR-10 from {archive}: {exc}") from None
    lacking = sorted(set(FILE_MD5) - found)
    if lacking:
        raise OSError(f"could not extract CIFAR-10: the archive lacks {', '.join(lacking)}")
