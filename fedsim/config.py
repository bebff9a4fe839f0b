"""Pydantic schema of a scenario file and its strict, all-errors-at-once loader."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsim.errors import InputError
from fedsim.yamlio import load_yaml_file, parse_scalar

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _field_error(loc: tuple[str, ...], message: str, value: object) -> ValidationError:
    """Return an error for a cross-field rule, located at the field it is about."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=loc, input=value
    )
    return ValidationError.from_exception_data("Scenario", [detail])


class PartitionSpec(_Strict):
    """How the training data is split over devices."""

    kind: Literal["iid", "shards", "dirichlet", "natural"] = "iid"
    shards_per_device: PositiveInt = 2
    alpha: PositiveFloat = 0.5
    test_per_device: PositiveInt | None = None


class DataSpec(_Strict):
    """The dataset, where its files are and how it is partitioned.

    ``samples_per_device`` (systems-only runs, ``learning: false``) gives every device
    that many training samples instead of partitioning the dataset, so a population may
    be far larger than the dataset; with ``samples_sigma > 0`` the counts are lognormal
    around it (median ``samples_per_device``, log-sigma ``samples_sigma``, at least 1).
    """

    dataset: Literal["digits", "synthetic", "mnist"] = "digits"
    dir: str | None = None
    partition: PartitionSpec = PartitionSpec()
    options: dict[str, JsonValue] = {}
    samples_per_device: PositiveInt | None = None
    samples_sigma: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _sigma_needs_samples(self) -> DataSpec:
        if self.samples_sigma > 0 and self.samples_per_device is None:
            raise _field_error(
                ("samples_sigma",), "needs data.samples_per_device", self.samples_sigma
            )
        return self


class CloudSpec(_Strict):
    """The cloud: its hardware and its backhaul link."""

    hardware: str = "cloud_server"
    backhaul: str = "wan"


class ComponentSpec(_Strict):
    """A pluggable component: a built-in name or ``package.module:Class`` and its params."""

    use: str
    params: dict[str, JsonValue] = {}


class OffloadSpec(ComponentSpec):
    """An offloading policy (docs/offloading.md) and its ``full`` rule.

    ``stay_online``: whether a device that handed its whole task to the edge must stay on
    line while the edge trains for it (a drop-out then loses the work).
    ``batches_per_step``: how many batches one step of a ``split`` plan carries on the
    clock (``all``: the round's batches in one step). 1, the default, gives every batch
    its own activation transfers and edge work; more means fewer events, the same times
    when the links and the edge are not shared, and coarser sharing when they are
    (docs/offloading.md, "Cost of split plans").
    """

    use: str = "local"
    stay_online: bool = True
    batches_per_step: PositiveInt | Literal["all"] = 1


class DeviceGroupSpec(_Strict):
    """A group of identical devices under one edge (``offload`` overrides the scenario's)."""

    hardware: str
    link: str
    count: PositiveInt
    offload: OffloadSpec | None = None


class CapacitySpec(_Strict):
    """A shared capacity per direction, Mbps (``null``: the link profile's ``shared_mbps``)."""

    up: PositiveFloat | None = None
    down: PositiveFloat | None = None


class EdgeSpec(_Strict):
    """An edge server with its devices.

    ``access_mbps`` overrides, for this edge, the shared capacity of the access network
    that its devices on a given link profile use (keyed by link profile name; default:
    the link profile's ``shared_mbps``).
    """

    name: str
    hardware: str = "edge_server"
    backhaul: str = "wan"
    trusted: bool = False
    access_mbps: dict[str, CapacitySpec] = {}
    devices: list[DeviceGroupSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _access_links_used(self) -> EdgeSpec:
        used = {g.link for g in self.devices}
        for link in self.access_mbps:
            if link not in used:
                raise _field_error(
                    ("access_mbps", link),
                    f"no device group of this edge uses link {link!r} "
                    f"(its links: {', '.join(sorted(used))})",
                    link,
                )
        return self


class TopologySpec(_Strict):
    """Cloud, edges, and device groups under each edge."""

    cloud: CloudSpec = CloudSpec()
    edges: list[EdgeSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_edge_names(self) -> TopologySpec:
        names = [e.name for e in self.edges]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"edge names must be unique; repeated: {', '.join(dupes)}")
        return self

    def num_devices(self) -> int:
        """Return the total number of devices."""
        return sum(g.count for e in self.edges for g in e.devices)


class FailureDetectionSpec(_Strict):
    """How the server learns that a device dropped out.

    ``instant``: at the moment it drops. ``timeout`` (default): ``timeout_s`` after its
    last sign of life (missed heartbeats), so a drop-out can hold a round open.
    """

    kind: Literal["instant", "timeout"] = "timeout"
    timeout_s: PositiveFloat = 30.0


class RoundsSpec(_Strict):
    """The synchronous round protocol (hierarchical when ``cloud_every > 1``)."""

    kind: Literal["sync"] = "sync"
    participants: PositiveInt | None = None
    participation: Annotated[float, Field(gt=0, le=1)] | None = None
    over_selection: Annotated[float, Field(ge=1)] = 1.0
    deadline_s: PositiveFloat | None = None
    min_report_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    cloud_every: PositiveInt = 1
    failure_detection: FailureDetectionSpec = FailureDetectionSpec()

    @model_validator(mode="after")
    def _one_of_count_or_fraction(self) -> RoundsSpec:
        if self.participants is not None and self.participation is not None:
            raise ValueError("give either participants (a count K) or participation (a fraction C)")
        return self


class AvailabilitySpec(_Strict):
    """Whether devices are always on, or follow an on/off process."""

    kind: Literal["always_on", "on_off"] = "always_on"
    mean_on_s: PositiveFloat = 3600.0
    mean_off_s: PositiveFloat = 600.0


class NetworkSpec(_Strict):
    """Whether transfers and server compute share capacities.

    ``contention: false``: each transfer runs at its own drawn rate, as if alone.
    """

    contention: bool = True


class TracesSpec(_Strict):
    """Measured traces replacing the drawn models for the devices they name (docs/traces.md).

    Paths are relative to the scenario file's folder.
    """

    bandwidth: str | None = None
    availability: str | None = None


class StopSpec(_Strict):
    """When a run ends (whichever comes first)."""

    max_rounds: PositiveInt = 10
    max_virtual_s: PositiveFloat | None = None
    target_accuracy: Annotated[float, Field(gt=0, le=1)] | None = None


class EvaluationSpec(_Strict):
    """How often models are evaluated, and whether user-model accuracy is measured."""

    every: PositiveInt = 1
    ua: bool = True


class RuntimeSpec(_Strict):
    """Where the model math runs.

    ``vectorize``: ``true`` trains a host call's devices in lock-step (batched), ``false``
    one after another (the bit-exact reference), ``auto`` in lock-step when the model is a
    chain of Linear/ReLU/BatchNorm1d/Flatten (the hand-fused path), one by one otherwise.
    """

    kind: Literal["inline", "ray"] = "inline"
    workers: PositiveInt = 2
    address: str | None = None
    torch_threads: PositiveInt = 1
    vectorize: bool | Literal["auto"] = "auto"
    timeout_s: PositiveFloat = 600.0
    dashboard: bool = False


class Scenario(_Strict):
    """A whole scenario file."""

    name: str = "scenario"
    seed: Annotated[int, Field(ge=0)]
    data: DataSpec = DataSpec()
    model: str
    topology: TopologySpec
    algorithm: ComponentSpec = ComponentSpec(use="fedavg")
    rounds: RoundsSpec = RoundsSpec()
    availability: AvailabilitySpec = AvailabilitySpec()
    network: NetworkSpec = NetworkSpec()
    offload: OffloadSpec = OffloadSpec()
    traces: TracesSpec = TracesSpec()
    stop: StopSpec = StopSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    learning: bool = True
    runtime: RuntimeSpec = RuntimeSpec()

    @model_validator(mode="after")
    def _participants_fit(self) -> Scenario:
        n = self.topology.num_devices()
        k = self.rounds.participants
        if k is not None and k > n:
            raise ValueError(f"rounds.participants = {k} is larger than the {n} devices")
        if self.learning and self.data.samples_per_device is not None:
            raise _field_error(
                ("data", "samples_per_device"),
                "only allowed with learning: false (training needs a partitioned dataset)",
                self.data.samples_per_device,
            )
        return self


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def validation_problems(source: str, exc: ValidationError) -> list[str]:
    """Turn a pydantic error into one line per problem: ``file: field: message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{source}: {_format_loc(loc)}: {msg}")
    return lines


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides applied.

    Values are parsed as YAML scalars (``3`` is an int, ``0.5`` a float, ``null`` None).
    List items are addressed by index (``topology.edges.0.devices.1.count=5``).
    """
    out = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item}: expected key.path=value")
            continue
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        node: Any = out
        try:
            for key in keys[:-1]:
                node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
            last = keys[-1]
            if isinstance(node, list):
                node[int(last)] = parse_scalar(value)
            elif isinstance(node, dict):
                node[last] = parse_scalar(value)
            else:
                raise TypeError
        except (ValueError, IndexError, TypeError, KeyError):
            problems.append(f"--set {item}: no such place in {source}")
    if problems:
        raise InputError(problems)
    return out


def scenario_from_dict(raw: Any, source: str) -> Scenario:
    """Validate a parsed scenario, reporting every problem at once."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: (top level): expected a mapping of scenario keys")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise InputError(validation_problems(source, exc)) from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file.

    Parameters
    ----------
    path : str or Path
        The YAML scenario file.
    overrides : list of str, optional
        ``key.path=value`` items applied before validation.

    Raises
    ------
    InputError
        One line per problem, naming the file and the field.
    """
    path = Path(path)
    raw = load_yaml_file(path)
    if overrides:
        raw = apply_overrides(raw, overrides, str(path))
    return scenario_from_dict(raw, str(path))


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """Return the resolved scenario as plain data (for run.json)."""
    return scenario.model_dump(mode="json")


def dump_yaml(data: dict[str, Any]) -> str:
    """Serialise plain data as YAML with keys in schema order."""
    return yaml.safe_dump(data, sort_keys=False)
