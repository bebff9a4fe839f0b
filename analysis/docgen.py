"""Shared pieces of the scripts that regenerate docs: paths, the commit, generated blocks."""

from __future__ import annotations

import subprocess
from pathlib import Path


def rel_path(path: Path, root: Path) -> str:
    """Return ``path`` relative to ``root`` when it lies inside it, else as given."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def git_commit(root: Path) -> str:
    """Return the checked-out commit (``+ local changes`` if the tree is dirty), if any."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown commit"
    if head.returncode != 0:
        return "unknown commit"
    return "commit " + head.stdout.strip() + (" + local changes" if dirty else "")


def replace_block(doc: Path, begin: str, end: str, block: str, title: str | None = None) -> None:
    """Replace the text between a doc's ``begin`` and ``end`` marker lines with ``block``.

    With ``title``, a missing doc is created holding only the title and the markers.
    """
    if title is not None and not doc.is_file():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(f"# {title}\n\n{begin}\n{end}\n")
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: no generated block (lines {begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n\n{block}\n{end}{tail}")
