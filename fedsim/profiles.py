"""Hardware and network profiles: YAML schema, strict all-errors loader, and dataclasses."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsim.bounds import (
    MAX_FLOPS,
    MAX_LOG_SIGMA,
    MAX_MBPS,
    MAX_WATTS,
    MIN_FLOPS,
    MIN_MBPS,
    in_range,
)
from fedsim.config import validation_problems
from fedsim.errors import InputError
from fedsim.yamlio import load_yaml_file

PROFILES_ENV = "FEDSIM_PROFILES"
DEVICES_DIR = "devices"
NETWORKS_DIR = "networks"
PROFILE_SUFFIX = ".yaml"
TRAINING_FLOPS_PER_FORWARD = 3.0  # forward + backward ~ 3x the forward FLOPs

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
Source = Annotated[str, Field(min_length=1)]


# --------------------------------------------------------------------------- file schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Each profile number has a physical range (fedsim/bounds.py says why); a value outside,
# inf or nan included, is an error naming the file and the field.


class MbpsValue(_Strict):
    """A bandwidth or capacity, Mbps, in [1e-3, 1e6], with its source."""

    value: Annotated[float, in_range(MIN_MBPS, MAX_MBPS, "Mbps")]
    source: Source


class SigmaValue(_Strict):
    """The log-sigma of a lognormal factor (a spread), in [0, 5], with its source."""

    value: Annotated[float, in_range(0, MAX_LOG_SIGMA)]
    source: Source


class FlopRateValue(_Strict):
    """An effective training FLOP rate in [1e3, 1e18] FLOP/s, with its source."""

    value: Annotated[float, in_range(MIN_FLOPS, MAX_FLOPS, "FLOP/s")]
    source: Source


class StepOverheadValue(_Strict):
    """The fixed seconds of one training step, in [0, 3600], with its source."""

    value: Annotated[float, in_range(0, 3600, "s")]
    source: Source


class WattsValue(_Strict):
    """An electrical power in (0, 1e4] W, with its source."""

    value: Annotated[float, in_range(0, MAX_WATTS, "W", low_open=True)]
    source: Source


class RttValue(_Strict):
    """A round-trip time in (0, 1e5] ms (up to 100 s), with its source."""

    value: Annotated[float, in_range(0, 1e5, "ms", low_open=True)]
    source: Source


class ByteCount(_Strict):
    """A positive whole number of bytes (at most 2**60, an exbibyte) with its source."""

    value: Annotated[int, Field(gt=0, le=2**60)]
    source: Source


class MeasuredSpec(_Strict):
    """Measured seconds per training batch of one named model.

    ``batch_size`` is 1 to 10**6 samples; ``s_per_batch`` above 0 and at most 1e6 s.
    """

    batch_size: Annotated[int, Field(gt=0, le=10**6)]
    s_per_batch: Annotated[float, in_range(0, 1e6, "s", low_open=True)]
    source: Source


class ComputeSpec(_Strict):
    """Training speed: effective FLOP rate, per-step overhead, jitter, measured models."""

    flops_per_s: FlopRateValue
    overhead_s_per_step: StepOverheadValue
    jitter_sigma: SigmaValue
    measured: dict[str, MeasuredSpec] = {}


class PowerSpec(_Strict):
    """Electrical power in each activity, watts (above 0, at most 1e4)."""

    compute: WattsValue
    transmit: WattsValue
    receive: WattsValue
    idle: WattsValue


class DeviceFile(_Strict):
    """A whole ``hardware_profiles/devices/<name>.yaml`` file."""

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    tier: Literal["device", "edge", "cloud"]
    description: Source
    compute: ComputeSpec
    memory_bytes: ByteCount
    power_w: PowerSpec


class BandwidthSpec(_Strict):
    """A lognormal bandwidth: median (Mbps) and sigma of its logarithm."""

    median: MbpsValue
    sigma: SigmaValue


class SharedCapacitySpec(_Strict):
    """Capacity (Mbps) of the medium a link's devices share at one edge, per direction.

    The medium is e.g. a WiFi access point, a cell sector or the edge's backhaul line.
    """

    up: MbpsValue
    down: MbpsValue


class LinkFile(_Strict):
    """A whole ``hardware_profiles/networks/<name>.yaml`` file.

    ``shared_mbps`` and ``device_sigma`` are optional: absent (or ``null``) means no shared
    capacity (every transfer independent) and no lasting per-device quality factor.
    """

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    description: Source
    up_mbps: BandwidthSpec
    down_mbps: BandwidthSpec
    rtt_ms: RttValue
    shared_mbps: SharedCapacitySpec | None = None
    device_sigma: SigmaValue | None = None


# --------------------------------------------------------------------------- dataclasses


def si_format(value: float, unit: str) -> str:
    """Format a value with an SI prefix, e.g. ``2.78e10 FLOP/s`` -> ``27.8 GFLOP/s``."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


@dataclass(frozen=True)
class DeviceProfile:
    """The hardware of a device, edge or cloud host, as the cost models use it.

    Attributes
    ----------
    name : str
        Profile name (the file stem).
    tier : str
        ``"device"``, ``"edge"`` or ``"cloud"``.
    flops_per_s : float
        Effective training FLOP rate.
    overhead_s_per_step : float
        Fixed cost of one SGD step, seconds.
    jitter_sigma : float
        Log-sigma of a multiplicative lognormal factor per training task.
    memory_bytes : int
        Memory available for training.
    power_compute_w, power_transmit_w, power_receive_w, power_idle_w : float
        Electrical power in each activity, watts.
    measured_s_per_batch : Mapping[str, tuple[int, float]]
        Model name -> (batch size, measured seconds per training batch).
    """

    name: str
    tier: str
    flops_per_s: float
    overhead_s_per_step: float
    jitter_sigma: float
    memory_bytes: int
    power_compute_w: float
    power_transmit_w: float
    power_receive_w: float
    power_idle_w: float
    measured_s_per_batch: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def step_s(self, model_name: str, forward_flops_per_sample: float, batch_size: int) -> float:
        """Return the seconds of one training step, without jitter.

        A measured figure for ``model_name`` wins and is scaled linearly by batch size;
        otherwise ``overhead_s_per_step + 3 * forward_flops_per_sample * batch_size /
        flops_per_s``.

        Parameters
        ----------
        model_name : str
            The model's registered name.
        forward_flops_per_sample : float
            Forward FLOPs of one sample.
        batch_size : int
            Samples in this step's batch.

        Returns
        -------
        float
            Seconds.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        measured = self.measured_s_per_batch.get(model_name)
        if measured is not None:
            measured_batch, measured_s = measured
            return measured_s * batch_size / measured_batch
        work = TRAINING_FLOPS_PER_FORWARD * forward_flops_per_sample * batch_size
        return self.overhead_s_per_step + work / self.flops_per_s

    def key_figures(self) -> dict[str, str]:
        """Return short human-readable figures (for ``fedsim profiles``)."""
        figures = {
            "tier": self.tier,
            "compute": (
                f"{si_format(self.flops_per_s, 'FLOP/s')} + "
                f"{self.overhead_s_per_step * 1e3:.3g} ms/step, jitter σ {self.jitter_sigma:g}"
            ),
            "memory": f"{self.memory_bytes / 2**30:.3g} GiB",
            "power": (
                f"compute {self.power_compute_w:g} W, tx {self.power_transmit_w:g} W, "
                f"rx {self.power_receive_w:g} W, idle {self.power_idle_w:g} W"
            ),
        }
        if self.measured_s_per_batch:
            figures["measured"] = f"{len(self.measured_s_per_batch)} models"
        return figures


@dataclass(frozen=True)
class LinkProfile:
    """A network link: lognormal up/down bandwidth, a round-trip time and a shared capacity.

    A device's own rate on a transfer is the median times a lasting per-device factor
    ``exp(device_sigma * z_device)`` (drawn once per device) times a per-transfer factor
    ``exp(sigma * z)``. Concurrent transfers of the devices on this link under one edge
    share ``shared_up_mbps`` / ``shared_down_mbps``, each flow capped by its own rate.

    Attributes
    ----------
    name : str
        Profile name (the file stem).
    up_mbps_median, down_mbps_median : float
        Median bandwidth, Mbps (up = away from the device, towards the cloud).
    up_sigma, down_sigma : float
        Log-sigma of the per-transfer bandwidth factor.
    rtt_s : float
        Round-trip time added to every transfer, seconds.
    shared_up_mbps, shared_down_mbps : float
        Capacity, Mbps, of the medium that this link's devices at one edge share (a WiFi
        access point, a cell sector, the edge's backhaul line), per direction; ``math.inf``
        (the default) means no shared limit: transfers are independent.
    device_sigma : float
        Log-sigma of the lasting per-device link-quality factor (location, signal
        strength), the same for both directions; 0 (the default) means none.
    """

    name: str
    up_mbps_median: float
    up_sigma: float
    down_mbps_median: float
    down_sigma: float
    rtt_s: float
    shared_up_mbps: float = math.inf
    shared_down_mbps: float = math.inf
    device_sigma: float = 0.0

    def key_figures(self) -> dict[str, str]:
        """Return short human-readable figures (for ``fedsim profiles``)."""
        return {
            "up": f"{self.up_mbps_median:g} Mbps (σ {self.up_sigma:g})",
            "down": f"{self.down_mbps_median:g} Mbps (σ {self.down_sigma:g})",
            "rtt": f"{self.rtt_s * 1e3:g} ms",
            "shared": _shared_figure(self.shared_up_mbps, self.shared_down_mbps),
            "device σ": f"{self.device_sigma:g}",
        }


def _shared_figure(up_mbps: float, down_mbps: float) -> str:
    """Format a shared capacity, e.g. ``"up 75 Mbps, down 150 Mbps"`` or ``"unlimited"``."""
    if math.isinf(up_mbps) and math.isinf(down_mbps):
        return "unlimited"
    parts = (
        f"{label} {'unlimited' if math.isinf(mbps) else f'{mbps:g} Mbps'}"
        for label, mbps in (("up", up_mbps), ("down", down_mbps))
    )
    return ", ".join(parts)


@dataclass(frozen=True)
class ProfileLibrary:
    """Every loaded profile, by name, plus the parsed files for the run record."""

    devices: Mapping[str, DeviceProfile]
    links: Mapping[str, LinkProfile]
    raw: Mapping[str, dict[str, Any]]

    def device(self, name: str) -> DeviceProfile:
        """Return a hardware profile; ``KeyError`` lists the known names."""
        try:
            return self.devices[name]
        except KeyError:
            known = ", ".join(sorted(self.devices))
            raise KeyError(f"unknown hardware profile {name!r}; known: {known}") from None

    def link(self, name: str) -> LinkProfile:
        """Return a link profile; ``KeyError`` lists the known names."""
        try:
            return self.links[name]
        except KeyError:
            known = ", ".join(sorted(self.links))
            raise KeyError(f"unknown link profile {name!r}; known: {known}") from None


# --------------------------------------------------------------------------- loading


def default_profiles_dir() -> Path:
    """Return ``$FEDSIM_PROFILES`` if set, else the bundled ``hardware_profiles``."""
    env = os.environ.get(PROFILES_ENV)
    if env:
        return Path(env)
    from fedsim.bundled import PROFILES, bundled_dir

    return bundled_dir(PROFILES)


def device_from_file(spec: DeviceFile) -> DeviceProfile:
    """Turn a validated device file into the simulator's dataclass."""
    measured = {model: (m.batch_size, m.s_per_batch) for model, m in spec.compute.measured.items()}
    return DeviceProfile(
        name=spec.name,
        tier=spec.tier,
        flops_per_s=spec.compute.flops_per_s.value,
        overhead_s_per_step=spec.compute.overhead_s_per_step.value,
        jitter_sigma=spec.compute.jitter_sigma.value,
        memory_bytes=spec.memory_bytes.value,
        power_compute_w=spec.power_w.compute.value,
        power_transmit_w=spec.power_w.transmit.value,
        power_receive_w=spec.power_w.receive.value,
        power_idle_w=spec.power_w.idle.value,
        measured_s_per_batch=measured,
    )


def link_from_file(spec: LinkFile) -> LinkProfile:
    """Turn a validated link file into the simulator's dataclass.

    Parameters
    ----------
    spec : LinkFile
        A validated link file.

    Returns
    -------
    LinkProfile
        Without ``shared_mbps`` the shared capacities are ``math.inf``; without
        ``device_sigma`` the lasting per-device spread is 0.
    """
    shared = spec.shared_mbps
    return LinkProfile(
        name=spec.name,
        up_mbps_median=spec.up_mbps.median.value,
        up_sigma=spec.up_mbps.sigma.value,
        down_mbps_median=spec.down_mbps.median.value,
        down_sigma=spec.down_mbps.sigma.value,
        rtt_s=spec.rtt_ms.value / 1e3,
        shared_up_mbps=math.inf if shared is None else shared.up.value,
        shared_down_mbps=math.inf if shared is None else shared.down.value,
        device_sigma=0.0 if spec.device_sigma is None else spec.device_sigma.value,
    )


def _validate_file(
    path: Path, schema: type[DeviceFile] | type[LinkFile], problems: list[str]
) -> tuple[DeviceFile | LinkFile | None, Any]:
    """Read and validate one file, appending every problem; return (spec or None, raw)."""
    try:
        raw = load_yaml_file(path)
    except InputError as exc:
        problems.extend(exc.problems)
        return None, None
    if not isinstance(raw, dict):
        problems.append(f"{path}: (top level): expected a mapping of profile keys")
        return None, raw
    found: list[str] = []
    name = raw.get("name")
    if isinstance(name, str) and name != path.stem:
        found.append(f"{path}: name: expected {path.stem!r} (the file name stem), got {name!r}")
    try:
        spec = schema.model_validate(raw)
    except ValidationError as exc:
        found.extend(validation_problems(str(path), exc))
        spec = None
    problems.extend(found)
    return (None if found else spec), raw


def _profile_files(folder: Path, problems: list[str]) -> list[Path]:
    """List a profile folder's ``*.yaml`` files, noting a missing folder or stray ``.yml``."""
    if not folder.is_dir():
        problems.append(f"{folder}: (folder): expected a folder of {PROFILE_SUFFIX} profiles")
        return []
    for stray in sorted(folder.glob("*.yml")):
        problems.append(f"{stray}: (file): expected the extension {PROFILE_SUFFIX}")
    return sorted(folder.glob(f"*{PROFILE_SUFFIX}"))


def load_profiles(root: Path | None = None) -> ProfileLibrary:
    """Load and validate every hardware and link profile under ``root``.

    Parameters
    ----------
    root : Path, optional
        A folder with ``devices/`` and ``networks/``; default :func:`default_profiles_dir`.

    Returns
    -------
    ProfileLibrary
        All profiles by name, and each file's parsed content under ``"devices/<name>"`` or
        ``"networks/<name>"``.

    Raises
    ------
    InputError
        One line per problem across all files, ``"<path>: <field.path>: <expected>"``.
    """
    root = default_profiles_dir() if root is None else Path(root)
    problems: list[str] = []
    devices: dict[str, DeviceProfile] = {}
    links: dict[str, LinkProfile] = {}
    raw_files: dict[str, dict[str, Any]] = {}

    for path in _profile_files(root / DEVICES_DIR, problems):
        spec, raw = _validate_file(path, DeviceFile, problems)
        if isinstance(spec, DeviceFile):
            devices[spec.name] = device_from_file(spec)
            raw_files[f"{DEVICES_DIR}/{spec.name}"] = raw
    for path in _profile_files(root / NETWORKS_DIR, problems):
        spec, raw = _validate_file(path, LinkFile, problems)
        if isinstance(spec, LinkFile):
            links[spec.name] = link_from_file(spec)
            raw_files[f"{NETWORKS_DIR}/{spec.name}"] = raw

    if not problems and not devices:
        problems.append(f"{root / DEVICES_DIR}: (folder): expected at least one device profile")
    if not problems and not links:
        problems.append(f"{root / NETWORKS_DIR}: (folder): expected at least one link profile")
    if problems:
        raise InputError(problems)
    return ProfileLibrary(devices=devices, links=links, raw=raw_files)
