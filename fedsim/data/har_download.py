"""Download the official UCI HAR zip and extract its ``UCI HAR Dataset`` folder."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from fedsim.data.har_files import (
    ARCHIVE_URL,
    DATASET_FOLDER,
    Source,
    brief,
    check_known,
    required_files,
    zip_source,
)


def download_uci_har(dest: Path, url: str = ARCHIVE_URL, timeout_s: float = 60.0) -> Path:
    """Download the official UCI HAR zip into ``dest`` and extract its dataset folder.

    The zip (about 60 MB) is written under a temporary name, its inner
    ``UCI HAR Dataset.zip`` opened, and every file of its ``UCI HAR Dataset/`` folder
    written to ``dest`` (each under a temporary name, then renamed); the zip is deleted
    afterwards. A folder that already holds every file of both views is kept and nothing is
    downloaded. The publisher gives no checksum: the label and subject files are checked
    as :func:`check_known` does and the loader checks the rest's structure.

    Parameters
    ----------
    dest : Path
        Target folder (created if needed), e.g. ``<data_dir>/uci_har``.
    url : str
        Where the zip is (the UCI repository by default).
    timeout_s : float
        Timeout of the request in seconds.

    Returns
    -------
    Path
        ``dest / "UCI HAR Dataset"``.

    Raises
    ------
    OSError
        If the zip cannot be downloaded or read, or lacks a file the loader needs.
    """
    dest = Path(dest)
    folder = dest / DATASET_FOLDER
    needed = sorted(set(required_files("engineered")) | set(required_files("inertial")))
    if all((folder / rel).is_file() for rel in needed):
        return folder
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / ".uci_har.zip.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, part.open("wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        source, why = zip_source(part)
        if source is None:
            raise OSError(f"could not download UCI HAR: {url}: the zip {why}")
        lacking = [rel for rel in needed if not source.has(rel)]
        if lacking:
            raise OSError(f"could not download UCI HAR: the zip lacks {brief(lacking)}")
        _extract(source, folder)
    finally:
        part.unlink(missing_ok=True)
    return folder


def _extract(source: Source, folder: Path) -> None:
    """Write every file of the dataset folder in ``source`` (a zip) under ``folder``."""
    for name in sorted(source.names):
        rel = name[len(source.prefix) :]
        if not name.startswith(source.prefix) or not rel or name.endswith("/"):
            continue
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise OSError(f"could not download UCI HAR: the zip names {name!r} outside its folder")
        raw = source.read(rel)
        problem = check_known(source, rel, raw)
        if problem is not None:
            raise OSError(f"could not download UCI HAR: {problem}")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(raw)
        os.replace(tmp, target)
