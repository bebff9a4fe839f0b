"""Known data files checked against their published checksums on first load, then cached.

A file is checked once; the result is kept in ``$XDG_CACHE_HOME/fedsim/verified-data.json``
(default ``~/.cache/fedsim/``), keyed by the file's absolute path, size and modification
time, so a file that is replaced, rewritten or touched is checked again. Only matches are
kept. The cache saves time and nothing else: a cache that cannot be read or written means
checking on every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CACHE_NAME = "verified-data.json"


def default_cache_file() -> Path:
    """Return ``$XDG_CACHE_HOME/fedsim/verified-data.json`` (default ``~/.cache``)."""
    root = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(root).expanduser() if root else Path.home() / ".cache"
    return base / "fedsim" / CACHE_NAME


def file_key(path: Path) -> str:
    """Return the cache key of ``path``: absolute path, size and modification time (ns)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


@dataclass
class VerifiedFiles:
    """The files already found to have their published digest (cache key -> hex digest).

    Attributes
    ----------
    cache_file : Path
        Where the entries are loaded from and saved to.
    entries : dict of str to str
        Cache key (:func:`file_key`) -> the hex digest the file was found to have (sha256;
        md5 for CIFAR-10, whose publisher gives only that).
    """

    cache_file: Path
    entries: dict[str, str] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def load(cls, cache_file: Path | None = None) -> VerifiedFiles:
        """Read the cache (an unreadable or malformed one counts as empty)."""
        path = cache_file if cache_file is not None else default_cache_file()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        if not isinstance(raw, dict):
            return cls(path)
        return cls(path, {str(k): str(v) for k, v in raw.items()})

    def mismatch(
        self, key: str, content: bytes, digest: str, algorithm: str = "sha256"
    ) -> str | None:
        """Return None if ``content`` has the hex digest ``digest``, else the digest it has.

        ``key`` is the file's :func:`file_key`, taken before ``content`` was read; a key
        already verified against ``digest`` skips the hashing. ``algorithm`` is the
        :mod:`hashlib` name of the digest (``md5`` where only that is published: CIFAR-10).
        """
        if self.entries.get(key) == digest:
            return None
        got = hashlib.new(algorithm, content).hexdigest()
        if got != digest:
            return got
        self.entries[key] = digest
        self.changed = True
        return None

    def save(self) -> None:
        """Write the cache if it changed (atomically; a failure to write is ignored)."""
        if not self.changed:
            return
        tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.entries, indent=0, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.cache_file)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        self.changed = False
