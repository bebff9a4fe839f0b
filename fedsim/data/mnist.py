"""MNIST: read the standard IDX files (plain or ``.gz``), validated, and an optional downloader.

A file with the published file's length is checked against its published sha256 on first
load (the result cached, fedsim/data/checksums.py); a corrupt copy is an error naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedsim.data.checksums import VerifiedFiles, file_key
from fedsim.data.datasets import Dataset
from fedsim.errors import InputError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIDE = 28

#: Split -> (images file, labels file), without the ``.gz`` suffix.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: md5 and sha256 of the *uncompressed* original files (LeCun et al.).
RAW_CHECKSUMS: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "6bbc9ace898e44ae57da46a324031adb",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        "a25bea736e30d166cdddb491f175f624",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        "2646ac647ad5339dbf082846283269ea",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        "27ae3e4e09519cfbb04c329615203637",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

#: Length in bytes of each original file, uncompressed: header and content.
RAW_LENGTHS: dict[str, int] = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}

#: Mirrors serving ``<name>.gz`` (torchvision's list, in its order).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


def search_dirs(data_dir: Path) -> list[Path]:
    """Return the folders searched for the MNIST files, in order."""
    return [data_dir / "mnist", data_dir, data_dir / "MNIST" / "raw"]


def find_file(data_dir: Path, name: str) -> tuple[Path | None, list[Path]]:
    """Find ``name`` or ``name.gz`` in :func:`search_dirs`.

    Returns
    -------
    path : Path or None
        The first existing candidate (plain before ``.gz`` within a folder).
    tried : list of Path
        Every candidate looked at, in order.
    """
    tried = []
    for folder in search_dirs(data_dir):
        for candidate in (folder / name, folder / f"{name}.gz"):
            tried.append(candidate)
            if candidate.is_file():
                return candidate, tried
    return None, tried


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file, checking its magic number and its length.

    Parameters
    ----------
    path : Path
        The file, plain or gzip-compressed (by its ``.gz`` suffix).
    ndim : int
        Expected number of dimensions (3 for images, 1 for labels).

    Raises
    ------
    InputError
        If the file is not valid gzip, has the wrong magic number, or its length
        differs from what its header says.
    """
    return parse_idx(read_raw(path), path, ndim)


def read_raw(path: Path) -> bytes:
    """Return a file's bytes, decompressed if its name ends in ``.gz``.

    Raises
    ------
    InputError
        If the file cannot be read or is not valid gzip.
    """
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Return the array of an unsigned-byte IDX file's content ``data`` (read from ``path``).

    Raises
    ------
    InputError
        If the magic number is wrong or the length differs from what the header says.
    """
    what = "bytes after decompression" if path.suffix == ".gz" else "bytes"
    expected_magic = 0x0800 | ndim
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise InputError(
            f"{path}: truncated IDX file: expected at least {header_len} {what}, got {len(data)}"
        )
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise InputError(
            f"{path}: bad magic number 0x{magic:08x}; expected 0x{expected_magic:08x} "
            f"(IDX, unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(data) < header_len:
        raise InputError(
            f"{path}: truncated IDX header: expected at least {header_len} {what}, got {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected_len = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_len:
        state = "truncated" if len(data) < expected_len else "longer than its header says"
        raise InputError(
            f"{path}: file is {state}: header dimensions {'x'.join(map(str, dims))} mean "
            f"{expected_len} {what} are expected, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_known(
    path: Path, name: str, ndim: int, verified: VerifiedFiles
) -> tuple[np.ndarray, str | None]:
    """Read the MNIST file ``name`` from ``path`` and check it against the published one.

    A file with the published file's length must have its content (sha256), checked on
    first load and then remembered in ``verified``; a file of another length is not the
    published file (a subset, a test fixture) and only its structure is checked.

    Returns
    -------
    array : np.ndarray
        The file's array.
    problem : str or None
        One line naming the file if its content is not the published one.
    """
    try:
        key = file_key(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    data = read_raw(path)
    array = parse_idx(data, path, ndim)
    if len(data) != RAW_LENGTHS[name]:
        return array, None
    expected = RAW_CHECKSUMS[name][1]
    got = verified.mismatch(key, data, expected)
    if got is None:
        return array, None
    content = "uncompressed content" if path.suffix == ".gz" else "content"
    return array, (
        f"{path}: corrupt: not the published MNIST file {name} (sha256 of its {content} is "
        f"{got}, expected {expected}); replace it, e.g. with "
        "fedsim.data.mnist.download_mnist, which verifies what it downloads"
    )


def missing_files_message(data_dir: Path, missing: dict[str, list[Path]]) -> list[str]:
    """Return the lines of the error for missing MNIST files."""
    lines = [f"MNIST files not found under {data_dir}:"]
    for name, tried in missing.items():
        lines.append(f"  {name}: looked for " + ", ".join(str(p) for p in tried))
    all_names = [n for pair in MNIST_FILES.values() for n in pair]
    lines += [
        f"Put these files (plain or .gz) in {data_dir / 'mnist'}: " + ", ".join(all_names) + ".",
        "The data folder is the scenario's data.dir, else $FEDSIM_DATA, else ~/.fedsim/data.",
        "With network access, fedsim.data.mnist.download_mnist(Path("
        f"{str(data_dir / 'mnist')!r})) downloads and verifies them.",
    ]
    return lines


def load_mnist_arrays(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and validate the four MNIST files.

    Returns
    -------
    dict
        ``{"train": (images, labels), "test": (images, labels)}``; images are uint8
        ``(n, 28, 28)``, labels uint8 ``(n,)``.

    Raises
    ------
    InputError
        Naming every missing file with the places looked at, the first unreadable or
        malformed file, or every file with the published length but not its content.
    """
    paths: dict[str, Path] = {}
    missing: dict[str, list[Path]] = {}
    for pair in MNIST_FILES.values():
        for name in pair:
            found, tried = find_file(data_dir, name)
            if found is None:
                missing[name] = tried
            else:
                paths[name] = found
    if missing:
        raise InputError(missing_files_message(data_dir, missing))
    out = {}
    problems = []
    verified = VerifiedFiles.load()
    for split, (img_name, lbl_name) in MNIST_FILES.items():
        images, bad_images = read_known(paths[img_name], img_name, 3, verified)
        labels, bad_labels = read_known(paths[lbl_name], lbl_name, 1, verified)
        problems += [p for p in (bad_images, bad_labels) if p is not None]
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            problems.append(
                f"{paths[img_name]}: images are {images.shape[1]}x{images.shape[2]}; "
                f"expected {IMAGE_SIDE}x{IMAGE_SIDE}"
            )
        if images.shape[0] != labels.shape[0]:
            problems.append(
                f"{paths[img_name]} has {images.shape[0]} images but {paths[lbl_name]} has "
                f"{labels.shape[0]} labels; expected the same count"
            )
        if labels.size and int(labels.max()) > 9:
            problems.append(f"{paths[lbl_name]}: label {int(labels.max())} out of range 0..9")
        out[split] = (images, labels)
    verified.save()
    if problems:
        raise InputError(problems)
    return out


def load_mnist(data_dir: Path) -> Dataset:
    """Return MNIST flattened to 784 features, normalised with mean 0.1307 and std 0.3081.

    Parameters
    ----------
    data_dir : Path
        The data folder; files are looked for in ``<data_dir>/mnist``, ``<data_dir>``
        and ``<data_dir>/MNIST/raw``.
    """
    arrays = load_mnist_arrays(data_dir)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return Dataset(
        name="mnist",
        x_train=_normalise(xtr),
        y_train=ytr.astype(np.int64),
        x_test=_normalise(xte),
        y_test=yte.astype(np.int64),
        num_classes=10,
        input_shape=(IMAGE_SIDE * IMAGE_SIDE,),
    )


def _normalise(images: np.ndarray) -> np.ndarray:
    """Return ``(images / 255 - mean) / std`` as float32 rows of 784 (in place, fast)."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x *= np.float32(1.0 / (255.0 * MNIST_STD))
    x -= np.float32(MNIST_MEAN / MNIST_STD)
    return x


def _verify_raw(name: str, raw: bytes) -> str | None:
    """Return None if ``raw`` has the published checksums of ``name``, else the reason."""
    md5, sha256 = RAW_CHECKSUMS[name]
    got_md5 = hashlib.md5(raw).hexdigest()
    if got_md5 != md5:
        return f"md5 of the uncompressed content is {got_md5}, expected {md5}"
    got_sha = hashlib.sha256(raw).hexdigest()
    if got_sha != sha256:
        return f"sha256 of the uncompressed content is {got_sha}, expected {sha256}"
    return None


def download_mnist(dest: Path, mirrors: Sequence[str] = MIRRORS, timeout_s: float = 60.0) -> Path:
    """Download the four MNIST ``.gz`` files into ``dest``, verifying their content.

    Each file is tried on each mirror in turn; the md5 and sha256 of the uncompressed
    content must match the published values. Files already in ``dest`` that verify are
    kept. Files are written under a temporary name and renamed.

    Parameters
    ----------
    dest : Path
        Target folder (created if needed), e.g. ``<data_dir>/mnist``.
    mirrors : sequence of str
        Base URLs ending in ``/``.
    timeout_s : float
        Per-request timeout in seconds.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    OSError
        If some file could not be obtained with the right content from any mirror.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in RAW_CHECKSUMS:
        target = dest / f"{name}.gz"
        if target.is_file():
            try:
                if _verify_raw(name, gzip.decompress(target.read_bytes())) is None:
                    continue
            except (OSError, EOFError, zlib.error):
                pass
        reasons = []
        for mirror in mirrors:
            url = f"{mirror}{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:
                    blob = response.read()
                reason = _verify_raw(name, gzip.decompress(blob))
            except (OSError, EOFError, zlib.error) as exc:
                reason = str(exc)
            if reason is None:
                tmp = target.with_name(f".{target.name}.part")
                tmp.write_bytes(blob)
                os.replace(tmp, target)
                break
            reasons.append(f"{url}: {reason}")
        else:
            failures.append(f"{name}.gz: " + "; ".join(reasons))
    if failures:
        raise OSError("could not download MNIST:\n" + "\n".join(failures))
    return dest
