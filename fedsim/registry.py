"""Resolve a component name: a built-in alias or a ``package.module:Class`` string."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def module_to_import(name: str, builtins: Mapping[str, str]) -> str | None:
    """Return the module :func:`resolve` imports for a ``package.module:Class`` name.

    Parameters
    ----------
    name : str
        A built-in alias (a key of ``builtins``) or ``package.module:Class``.
    builtins : Mapping[str, str]
        Alias -> ``package.module:Class``.

    Returns
    -------
    str or None
        ``package.module``; None for a built-in alias or a name of neither form.
    """
    if name in builtins or ":" not in name:
        return None
    return name.partition(":")[0]


def resolve(name: str, builtins: Mapping[str, str], what: str) -> type:
    """Return the class that ``name`` refers to.

    Parameters
    ----------
    name : str
        A built-in alias (a key of ``builtins``) or ``package.module:Class``.
    builtins : Mapping[str, str]
        Alias -> ``package.module:Class``.
    what : str
        What kind of component this is, for error messages.

    Raises
    ------
    LookupError
        With a message saying what was expected.
    """
    target = builtins.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(builtins))
        raise LookupError(
            f"unknown {what} {name!r}; expected one of {known} or 'package.module:Class'"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"{what} {name!r}: cannot import module {module_name!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise LookupError(f"{what} {name!r}: module {module_name!r} has no class {attr!r}")
    return cls
