"""Safe YAML reading that rejects duplicate keys and reports errors with file and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fedsim.errors import InputError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate mapping keys and reads ``2.1e9`` as a float."""


# YAML 1.2 floats such as 2.1e9 (YAML 1.1, and so plain PyYAML, reads them as strings).
_FLOAT_RE = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?\.[0-9_]+[eE][-+]?[0-9]+$"
)


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text safely; duplicate keys and syntax errors become an InputError."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{source}: {where}: unreadable YAML: {problem}") from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, deep nesting
        problem = str(exc).split(";")[0] or type(exc).__name__
        raise InputError(f"{source}: unreadable YAML: {problem}") from None


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """Read a text file; a missing or unreadable file becomes an InputError naming it."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read file: {exc}") from None


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file becomes an InputError."""
    return load_yaml_text(read_text_file(path), str(path))


def parse_scalar(text: str) -> Any:
    """Parse one ``--set`` value as a YAML scalar or flow collection."""
    return load_yaml_text(text, "--set value")
