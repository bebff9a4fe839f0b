"""UCI HAR: find its standard folder (extracted or in a zip) and read its text files.

The UCI "Human Activity Recognition Using Smartphones" dataset (UCI id 240, Anguita et al.,
ESANN 2013) is the folder ``UCI HAR Dataset`` holding, for each split ``train`` and
``test``, ``X_<split>.txt`` (one window per row: 561 engineered features in [-1, 1],
whitespace-separated), ``y_<split>.txt`` (activity 1..6 per row), ``subject_<split>.txt``
(volunteer 1..30 per row) and ``Inertial Signals/<signal>_<split>.txt`` (nine files of 128
samples per row, one per raw channel), plus ``features.txt`` and ``activity_labels.txt``
(names only; not needed here). The official download is a zip that holds another zip,
``UCI HAR Dataset.zip``, which holds the folder.

The publisher gives no checksums. The label and subject files are checked against the
sha256 of the copies verified in two independent repositories when they have those files'
length (a file of another length, e.g. with other line ends or a test fixture, has only its
structure checked); every file's structure is checked (row and column counts, values). The
downloader is in fedsim/data/har_download.py.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsim.errors import InputError

DATASET_FOLDER = "UCI HAR Dataset"
INNER_ZIP = "UCI HAR Dataset.zip"
ARCHIVE_URL = (
    "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
)
NUM_FEATURES = 561
WINDOW_SAMPLES = 128
#: The nine raw channels, in the order the dataset's README lists them.
INERTIAL_SIGNALS: tuple[str, ...] = tuple(
    f"{sensor}_{axis}" for sensor in ("body_acc", "body_gyro", "total_acc") for axis in "xyz"
)
SPLITS: tuple[str, str] = ("train", "test")

#: (length in bytes, sha256) of label and subject files whose copies were verified.
KNOWN_FILES: dict[str, tuple[int, str]] = {
    "train/y_train.txt": (
        14_704, "415b3357e2e2d5e70a45c781947c6bdd80e0410a579d862eedcd6bbce3c694ef"
    ),
    "test/y_test.txt": (5_894, "2a94cb53ca46b956c1b2aebd4a09a72badd8a8e9ea9cdfe9f31b3306a08666bb"),
    "train/subject_train.txt": (
        20_152, "66e1e2fbe9b396fa5155f531dc3348c803f503be663e2318772d49947db9153a"
    ),
    "test/subject_test.txt": (
        7_934, "63b8c577f4a85431c06bd87f6384608c90a9f72f05c7956dd21255dc63515c07"
    ),
}  # fmt: skip


def label_files(split: str) -> tuple[str, str]:
    """Return the labels and subjects files of ``split``, relative to the dataset folder."""
    return f"{split}/y_{split}.txt", f"{split}/subject_{split}.txt"


def feature_files(split: str, features: str) -> list[str]:
    """Return the input files of ``split`` for a view (``engineered`` or ``inertial``)."""
    if features == "engineered":
        return [f"{split}/X_{split}.txt"]
    return [f"{split}/Inertial Signals/{name}_{split}.txt" for name in INERTIAL_SIGNALS]


def required_files(features: str) -> list[str]:
    """Return every file the loader reads for a view, relative to the dataset folder."""
    return [name for s in SPLITS for name in (*label_files(s), *feature_files(s, features))]


@dataclass
class Source:
    """Where the dataset folder is: a folder on disk or a prefix inside a (nested) zip.

    Attributes
    ----------
    label : str
        What to call it in messages (a path, ``archive.zip:UCI HAR Dataset/`` ...).
    folder : Path or None
        The dataset folder on disk, or None for a zip.
    blob : bytes or None
        The zip holding the folder (read into memory), or None for a folder.
    prefix : str
        The folder's path inside the zip, ending in ``/``.
    names : set of str
        Every member name of the zip.
    """

    label: str
    folder: Path | None = None
    blob: bytes | None = None
    prefix: str = ""
    names: set[str] = field(default_factory=set)

    def has(self, rel: str) -> bool:
        """Return True if the dataset file ``rel`` is there."""
        if self.folder is not None:
            return (self.folder / rel).is_file()
        return self.prefix + rel in self.names

    def where(self, rel: str) -> str:
        """Return the name of file ``rel`` for messages."""
        if self.folder is not None:
            return str(self.folder / rel)
        return f"{self.label}{rel}"

    def read(self, rel: str) -> bytes:
        """Return the bytes of dataset file ``rel``.

        Raises
        ------
        InputError
            If it cannot be read.
        """
        try:
            if self.folder is not None:
                return (self.folder / rel).read_bytes()
            assert self.blob is not None
            with zipfile.ZipFile(io.BytesIO(self.blob)) as archive:
                return archive.read(self.prefix + rel)
        except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
            raise InputError(f"{self.where(rel)}: cannot read ({exc})") from None


def zip_source(path: Path) -> tuple[Source | None, str]:
    """Return the dataset folder inside zip ``path`` (or its inner zip), or why not."""
    try:
        blob = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            names = set(archive.namelist())
            inner = sorted(n for n in names if n.rsplit("/", 1)[-1] == INNER_ZIP)
            if not any(f"{DATASET_FOLDER}/" in n for n in names) and inner:
                blob = archive.read(inner[0])
                label = f"{path}:{inner[0]}:"
                with zipfile.ZipFile(io.BytesIO(blob)) as nested:
                    names = set(nested.namelist())
            else:
                label = f"{path}:"
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        return None, f"not a readable zip ({exc})"
    tops = sorted(
        n[: n.index(f"{DATASET_FOLDER}/") + len(DATASET_FOLDER) + 1]
        for n in names
        if f"{DATASET_FOLDER}/" in n and not n.startswith("__MACOSX")
    )
    if not tops:
        return None, f"holds no {DATASET_FOLDER}/ folder (nor {INNER_ZIP})"
    prefix = tops[0]
    return Source(f"{label}{prefix}", blob=blob, prefix=prefix, names=names), ""


def candidates(data_dir: Path) -> Iterator[tuple[Source | None, str, str]]:
    """Yield the places to look for the dataset, in order: (source, label, why not).

    ``<data_dir>/uci_har/UCI HAR Dataset/``, ``<data_dir>/UCI HAR Dataset/``, then every
    ``*.zip`` in ``<data_dir>/uci_har/`` by name (the official download, the inner
    ``UCI HAR Dataset.zip``, or any zip holding the folder). A zip is read only when the
    places before it did not do.
    """
    for folder in (data_dir / "uci_har" / DATASET_FOLDER, data_dir / DATASET_FOLDER):
        if folder.is_dir():
            yield Source(f"{folder}/", folder=folder), f"{folder}/", ""
        else:
            yield None, f"{folder}/", "no such folder"
    zips = data_dir / "uci_har"
    for path in sorted(zips.glob("*.zip")) if zips.is_dir() else []:
        source, why = zip_source(path)
        yield source, str(path), why


def brief(names: list[str]) -> str:
    """Return a list of file names, shortened after four."""
    return (
        ", ".join(names)
        if len(names) <= 4
        else ", ".join(names[:3]) + f" and {len(names) - 3} more"
    )


def find_source(data_dir: Path, features: str) -> Source:
    """Return the first place holding every file a view needs.

    Raises
    ------
    InputError
        Naming every place looked at and what it lacks, and how to get the files.
    """
    needed = required_files(features)
    lines = [f"UCI HAR files not found under {data_dir} ({features} features):"]
    small_only = False
    for source, label, why in candidates(data_dir):
        if source is None:
            lines.append(f"  {label}: {why}")
            continue
        missing = [rel for rel in needed if not source.has(rel)]
        if not missing:
            return source
        lines.append(f"  {source.label}: missing {brief(missing)}")
        labels = [rel for s in SPLITS for rel in label_files(s)]
        small_only |= all(source.has(rel) for rel in labels)
    if small_only:
        what = "X_train.txt, X_test.txt" if features == "engineered" else "Inertial Signals/"
        lines.append(
            f"The labels and subjects are there but the inputs ({what}) are not: a copy with "
            "only the small files (e.g. UCI_HAR_Dataset_small_files.zip) cannot be trained on."
        )
    target = data_dir / "uci_har"
    lines += [
        f"Put the official zip ({ARCHIVE_URL}) in {target}, or extract it so that "
        f"{target / DATASET_FOLDER} holds train/ and test/.",
        "The data folder is the scenario's data.dir, else $FEDSIM_DATA, else ~/.fedsim/data.",
        "With network access, fedsim.data.har.download_uci_har(Path("
        f"{str(target)!r})) downloads and extracts it.",
    ]
    raise InputError(lines)


def parse_rows(raw: bytes, where: str, columns: int) -> np.ndarray:
    """Return a whitespace-separated text matrix as float64 ``(rows, columns)``.

    Blank lines are skipped; line ends may be LF, CRLF or CR.

    Raises
    ------
    InputError
        Naming the file and the first line whose value count is not ``columns``, or a
        value that is not a finite number.
    """
    lines = [line for line in raw.splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        count = len(line.split())
        if count != columns:
            raise InputError(
                f"{where}: line {number} has {count} values; expected {columns} per line"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.fromstring(raw, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        values = np.empty(0)
    if values.size != len(lines) * columns or not np.all(np.isfinite(values)):
        raise InputError(f"{where}: expected only finite numbers separated by whitespace")
    return values.reshape(len(lines), columns)


def parse_ints(raw: bytes, where: str, low: int, high: int) -> np.ndarray:
    """Return a one-integer-per-line text file as int64, checking ``low <= v <= high``.

    Raises
    ------
    InputError
        Naming the file and the first bad line or value.
    """
    values = parse_rows(raw, where, 1)[:, 0]
    bad = np.flatnonzero((values != np.round(values)) | (values < low) | (values > high))
    if bad.size:
        raise InputError(
            f"{where}: line {int(bad[0]) + 1} holds {values[bad[0]]:g}; expected an integer "
            f"in {low}..{high}"
        )
    return values.astype(np.int64)


def check_known(source: Source, rel: str, raw: bytes) -> str | None:
    """Return a problem if ``raw`` has a verified file's length but not its sha256."""
    known = KNOWN_FILES.get(rel)
    if known is None or len(raw) != known[0]:
        return None
    got = hashlib.sha256(raw).hexdigest()
    if got == known[1]:
        return None
    return (
        f"{source.where(rel)}: corrupt: has the length of the published file but sha256 "
        f"{got}, expected {known[1]}"
    )
