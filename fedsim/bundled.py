"""The files fedsim ships with: hardware profiles and starter scenarios.

A source checkout keeps them at the repository's top level (``hardware_profiles/``,
``scenarios/``); an installed wheel holds them inside the package (``fedsim/...``), found
with :mod:`importlib.resources`.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from fedsim.errors import InputError

PROFILES = "hardware_profiles"
SCENARIOS = "scenarios"


def bundled_dir(name: str) -> Path:
    """Return the folder of bundled ``name`` files (``hardware_profiles`` or ``scenarios``).

    Raises
    ------
    InputError
        The installation holds no such folder.
    """
    packaged = resources.files("fedsim") / name
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[1] / name
    if checkout.is_dir():
        return checkout
    raise InputError(f"{packaged}: (folder): this fedsim installation has no bundled {name}/")


def scenario_names() -> list[str]:
    """Return the bundled scenarios' names (``quickstart``, ``offloading/designer``, ...)."""
    root = bundled_dir(SCENARIOS)
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def copy_scenario(name: str, dest_dir: Path) -> list[Path]:
    """Copy bundled scenario ``name`` (and the trace files it names) into ``dest_dir``.

    The scenario's relative trace paths keep working: the traces land at the same
    relative place. Nothing is overwritten.

    Returns
    -------
    list of Path
        The files written, the scenario first.

    Raises
    ------
    InputError
        An unknown name, a file already there, or a folder that cannot be written.
    """
    from fedsim.yamlio import load_yaml_file

    root = bundled_dir(SCENARIOS)
    names = scenario_names()
    if name not in names:
        raise InputError(f"{name}: unknown bundled scenario; known: {', '.join(names)}")
    source = root / f"{name}.yaml"
    raw = load_yaml_file(source)
    traces = (raw.get("traces") or {}) if isinstance(raw, dict) else {}
    pairs = [(source, dest_dir / source.name)]
    for value in traces.values():
        if isinstance(value, str):
            pairs.append((source.parent / value, dest_dir / value))
    clash = [str(d) for _, d in pairs if d.exists()]
    if clash:
        raise InputError(f"{clash[0]}: already exists; nothing was copied (remove it or use --dir)")
    try:
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    except OSError as exc:
        raise InputError(f"{dest_dir}: (folder): cannot write there: {exc.strerror}") from None
    return [d for _, d in pairs]
