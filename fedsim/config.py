"""Pydantic schema of a scenario file and its strict, all-errors-at-once loader."""

from __future__ import annotations

import copy
import numbers
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fedsim.bounds import (
    MAX_DEVICES,
    MAX_LOG_SIGMA,
    MAX_SEED,
    MAX_VIRTUAL_S,
    MAX_WALL_S,
    in_range,
)
from fedsim.config_rounds import (
    AsyncRoundsSpec,
    RoundsProtocol,
    RoundsSpec,
)
from fedsim.config_types import Count, Mbps, Strict, VirtualSeconds, field_error
from fedsim.errors import InputError
from fedsim.yamlio import load_yaml_file, load_yaml_text

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")


def _folder_safe(name: str) -> str:
    """Accept a scenario name that is safe as a folder name (it names ``runs/<name>-<n>``)."""
    if not _NAME_RE.fullmatch(name):
        raise PydanticCustomError(
            "folder_name",
            "expected 1 to 100 letters, digits or . _ + = - starting with a letter or digit "
            "(the name becomes the folder runs/<name>-<n>)",
        )
    return name


_Strict = Strict
_field_error = field_error


class PartitionSpec(_Strict):
    """How the training data is split over devices."""

    kind: Literal["iid", "shards", "dirichlet", "natural"] = "iid"
    #: Shards per device, 1 to 10**6 (their total must not exceed the train samples).
    shards_per_device: Annotated[int, Field(gt=0, le=10**6)] = 2
    #: Dirichlet concentration in (0, 1e6]; above ~100 the split is practically iid
    #: (use ``kind: iid``), and numpy's sampler breaks down far beyond 1e6.
    alpha: Annotated[float, in_range(0, 1e6, low_open=True)] = 0.5
    #: Test samples per device, 1 to 10**6 (dirichlet and natural).
    test_per_device: Annotated[int, Field(gt=0, le=10**6)] | None = None
    #: natural only: train samples per device, 1 to 10**6, a seeded sample of its user's.
    train_per_device: Annotated[int, Field(gt=0, le=10**6)] | None = None
    #: natural only: draw each device's ``test_per_device`` test samples class-balanced
    #: (as far as its user's test rows allow).
    balanced_test: bool = False

    @model_validator(mode="after")
    def _natural_only(self) -> PartitionSpec:
        if self.kind != "natural":
            for key in ("train_per_device", "balanced_test"):
                if getattr(self, key):
                    raise _field_error((key,), "only with kind: natural", getattr(self, key))
        if self.balanced_test and self.test_per_device is None:
            raise _field_error(("balanced_test",), "needs test_per_device", True)
        return self


class NoiseSpec(_Strict):
    """Noisy clients (MTFL's Table 3): Gaussian noise on some devices' inputs.

    Zero-mean, standard deviation ``std`` (in (0, 1000], in the inputs' normalised units),
    on every input, training and test, of a ``fraction`` (in (0, 1]) of the devices, drawn
    once per run.
    """

    fraction: Annotated[float, in_range(0, 1, low_open=True)]
    std: Annotated[float, in_range(0, 1000, low_open=True)]


class SharingSpec(_Strict):
    """Data sharing (Zhao et al. 2018; PerFit section IV-E): a global subset for every device.

    The cloud holds ``global_size`` class-balanced training rows, taken out of the devices'
    partition; each device receives ``per_device`` of them (at most ``global_size``) and
    trains on them with its own (``train: false``: holds them only, as the public set of
    federated distillation). Both sizes 1 to 10**7.
    """

    global_size: Annotated[int, Field(gt=0, le=10**7)]
    per_device: Annotated[int, Field(gt=0, le=10**7)]
    train: bool = True

    @model_validator(mode="after")
    def _fits(self) -> SharingSpec:
        if self.per_device > self.global_size:
            raise _field_error(
                ("per_device",), f"at most global_size ({self.global_size})", self.per_device
            )
        return self


class DataSpec(_Strict):
    """The dataset, where its files are and how it is partitioned.

    ``samples_per_device`` (systems-only runs, ``learning: false``) gives every device
    that many training samples instead of partitioning the dataset, so a population may
    be far larger than the dataset; with ``samples_sigma > 0`` the counts are lognormal
    around it (median ``samples_per_device``, log-sigma ``samples_sigma``, at least 1).
    Ranges: ``samples_per_device`` 1 to 10**6, ``samples_sigma`` 0 to 5.
    """

    dataset: Literal["digits", "synthetic", "mnist", "cifar10", "uci_har", "synthetic_har"] = (
        "digits"
    )
    dir: str | None = None
    partition: PartitionSpec = PartitionSpec()
    options: dict[str, JsonValue] = {}
    samples_per_device: Annotated[int, Field(gt=0, le=10**6)] | None = None
    samples_sigma: Annotated[float, in_range(0, MAX_LOG_SIGMA)] = 0.0
    noise: NoiseSpec | None = None
    sharing: SharingSpec | None = None

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


class AlgorithmSpec(ComponentSpec):
    """The FL algorithm: FedAvg unless ``use`` names another.

    With ``use`` defaulted, ``--set algorithm.params.lr=...`` works on a scenario that has
    no ``algorithm`` section.
    """

    use: str = "fedavg"


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
    batches_per_step: Count | Literal["all"] = 1


class DeviceGroupSpec(_Strict):
    """A group of identical devices under one edge (``offload`` overrides the scenario's).

    ``count`` is 1 to 10**7 (``fedsim.bounds.MAX_DEVICES``, also the whole population's
    limit). ``model`` is the architecture these devices train (None: the scenario's
    ``model``); another architecture than the scenario's is for algorithms whose devices
    keep their whole model (``fd``), and is checked by :func:`fedsim.prepare.check`.
    """

    hardware: str
    link: str
    count: Annotated[int, Field(gt=0, le=MAX_DEVICES)]
    offload: OffloadSpec | None = None
    model: str | None = None


class CapacitySpec(_Strict):
    """A shared capacity per direction, Mbps (``null``: the link profile's ``shared_mbps``).

    Each in [1e-3, 1e6] Mbps (1 kbit/s to 1 Tbit/s).
    """

    up: Mbps | None = None
    down: Mbps | None = None


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
        first: dict[str, int] = {}
        for i, edge in enumerate(self.edges):
            if edge.name in first:
                raise _field_error(
                    ("edges", i, "name"),
                    f"edge names must be unique; edges[{first[edge.name]}] has this name too",
                    edge.name,
                )
            first[edge.name] = i
        return self

    @model_validator(mode="after")
    def _population_fits(self) -> TopologySpec:
        n = self.num_devices()
        if n > MAX_DEVICES:
            raise _field_error(
                ("edges",),
                f"the device counts add up to {n:,} devices; at most {MAX_DEVICES:,} are "
                "supported (the simulator keeps a few numbers per device)",
                n,
            )
        return self

    def num_devices(self) -> int:
        """Return the total number of devices."""
        return sum(g.count for e in self.edges for g in e.devices)


class AvailabilitySpec(_Strict):
    """Whether devices are always on, or follow an on/off process.

    The mean on and off periods are in [0.1, 1e9] seconds: a device that comes and goes
    faster than ten times a second has a flaky link, not an availability pattern.
    """

    kind: Literal["always_on", "on_off"] = "always_on"
    mean_on_s: Annotated[float, in_range(0.1, MAX_VIRTUAL_S, "s")] = 3600.0
    mean_off_s: Annotated[float, in_range(0.1, MAX_VIRTUAL_S, "s")] = 600.0


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
    """When a run ends (whichever comes first).

    ``max_rounds`` counts rounds, or global versions in an asynchronous run. At
    ``max_virtual_s`` a synchronous run finishes the round under way (its last round may end
    after it); an asynchronous run stops exactly there.

    ``target_accuracy`` stops at the first evaluated global model whose test accuracy
    reaches it; ``target_ua`` at the first evaluation whose mean user-model accuracy
    (``rounds.csv``'s ``ua_mean``; with noisy clients, ``data.noise``, the clean devices'
    ``ua_mean_clean``, as in MTFL's Table 3) reaches it, which needs ``evaluation.ua: true``.
    Both are checked only at evaluated versions (``evaluation.every``).

    Ranges: ``max_rounds`` 1 to 10**7; ``max_virtual_s`` in (0, 1e9] s;
    ``target_accuracy`` and ``target_ua`` in (0, 1].
    """

    max_rounds: Count = 10
    max_virtual_s: VirtualSeconds | None = None
    target_accuracy: Annotated[float, in_range(0, 1, low_open=True)] | None = None
    target_ua: Annotated[float, in_range(0, 1, low_open=True)] | None = None

    @property
    def needs_values(self) -> bool:
        """Return whether a stop rule reads an evaluation's values as soon as it is made."""
        return self.target_accuracy is not None or self.target_ua is not None

    def reached(self, row: dict[str, object]) -> str | None:
        """Return the target a ``rounds.csv`` row reaches (``stopped_by``), else None.

        A row not evaluated (accuracy columns None) reaches none.
        """
        acc = row.get("accuracy")
        clean = row.get("ua_mean_clean")
        ua = clean if clean is not None else row.get("ua_mean")
        for why, value, target in (
            ("target_accuracy", acc, self.target_accuracy),
            ("target_ua", ua, self.target_ua),
        ):
            if target is not None and isinstance(value, numbers.Real) and float(value) >= target:
                return why
        return None


class EvaluationSpec(_Strict):
    """How often models are evaluated, and whether user-model accuracy is measured.

    ``every``: every N global versions. ``every_s`` (asynchronous runs): also at the
    first version after every T virtual seconds.
    """

    every: Count = 1
    every_s: VirtualSeconds | None = None
    ua: bool = True


class CheckpointSpec(_Strict):
    """When a run writes a checkpoint (docs/reliability.md); ``fedsim resume`` continues it.

    At the round boundary after every ``every_rounds`` rounds, and/or once ``every_wall_s``
    wall-clock seconds have passed since the last one; ``enabled: false`` writes none.
    When they are written never changes a result.
    """

    enabled: bool = True
    every_rounds: Count | None = None
    every_wall_s: Annotated[float, in_range(0, MAX_WALL_S, "s", low_open=True)] | None = 60.0


class RuntimeSpec(_Strict):
    """Where the model math runs.

    ``vectorize``: ``true`` trains a host call's devices in lock-step (batched), ``false``
    one after another (the bit-exact reference), ``auto`` in lock-step when the model is a
    chain of Linear/ReLU/BatchNorm1d/Flatten (the hand-fused path), one by one otherwise.
    ``workers`` and ``torch_threads`` are 1 to 1024; ``timeout_s`` (wall clock) is in
    (0, 1e6] s. ``on_failure`` (Ray): ``fail`` stops the run when a device-host actor dies
    (the finished rounds and the last checkpoint stay on disk); ``recover`` restarts it and
    re-runs the lost training, with results identical to an undisturbed run
    (docs/reliability.md).
    """

    kind: Literal["inline", "ray"] = "inline"
    workers: Annotated[int, Field(gt=0, le=1024)] = 2
    address: str | None = None
    torch_threads: Annotated[int, Field(gt=0, le=1024)] = 1
    vectorize: bool | Literal["auto"] = "auto"
    timeout_s: Annotated[float, in_range(0, MAX_WALL_S, "s", low_open=True)] = 600.0
    dashboard: bool = False
    on_failure: Literal["fail", "recover"] = "fail"


class Scenario(_Strict):
    """A whole scenario file.

    ``name`` names the run folder ``runs/<name>-<n>``: 1 to 100 letters, digits or
    ``. _ + = -``, starting with a letter or digit. ``seed`` is 0 to 2**63 - 1.
    """

    name: Annotated[str, AfterValidator(_folder_safe)] = "scenario"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    data: DataSpec = DataSpec()
    model: str
    topology: TopologySpec
    algorithm: AlgorithmSpec = AlgorithmSpec()
    rounds: RoundsProtocol = RoundsSpec()
    availability: AvailabilitySpec = AvailabilitySpec()
    network: NetworkSpec = NetworkSpec()
    offload: OffloadSpec = OffloadSpec()
    traces: TracesSpec = TracesSpec()
    stop: StopSpec = StopSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    learning: bool = True
    runtime: RuntimeSpec = RuntimeSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()

    @model_validator(mode="after")
    def _participants_fit(self) -> Scenario:
        n = self.topology.num_devices()
        k = self.rounds.participants if isinstance(self.rounds, RoundsSpec) else None
        if k is not None and k > n:
            raise _field_error(
                ("rounds", "participants"), f"{k} is larger than the {n} devices of the topology", k
            )
        if self.stop.target_ua is not None and not self.evaluation.ua:
            raise _field_error(
                ("stop", "target_ua"),
                "needs evaluation.ua: true (user-model accuracy is measured only then)",
                self.stop.target_ua,
            )
        if self.evaluation.every_s is not None and not isinstance(self.rounds, AsyncRoundsSpec):
            raise _field_error(
                ("evaluation", "every_s"),
                "only for asynchronous runs (rounds.kind: async); use evaluation.every",
                self.evaluation.every_s,
            )
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
        else:  # a key that is not one printable line is quoted: an error stays one line
            out += ("." if out else "") + (part if part.isprintable() else short_repr(part))
    return out or "(top level)"


def short_repr(value: object, limit: int = 80) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters (an error line stays one line)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = f"an integer of {value.bit_length() if isinstance(value, int) else '?'} bits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_problems(source: str, exc: ValidationError) -> list[str]:
    """Turn a pydantic error into one line per problem: ``file: field: message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if loc[:1] == ("rounds",) and loc[1:2] in (("sync",), ("async",)):
            loc = loc[:1] + loc[2:]  # the protocol's tag, which the file does not show
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {short_repr(err['input'])})"
        lines.append(f"{source}: {_format_loc(loc)}: {msg}")
    return lines


def option_label(option: str, item: str) -> str:
    """Return ``option item`` for a message, ``item`` quoted unless it is one printable line."""
    return f"{option} {item}" if item.isprintable() else f"{option} {short_repr(item)}"


def _set_one(out: dict[str, Any], item: str, source: str) -> str | None:
    """Apply one ``key.path=value`` override to ``out`` in place; return a problem or None."""
    label = option_label("--set", item)
    if "=" not in item:
        return f"{label}: expected key.path=value"
    path, text = item.split("=", 1)
    keys = path.strip().split(".")
    if "" in keys:
        return f"{label}: expected key.path=value, with no empty key in the path"
    try:
        value = load_yaml_text(text, label)
    except InputError as exc:
        return exc.problems[0]
    node: Any = out
    for depth, key in enumerate(keys):
        here = ".".join(keys[:depth]) or "(top level)"
        last = depth == len(keys) - 1
        if isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        elif isinstance(node, list):
            if not (key.isascii() and key.isdigit()) or int(key) >= len(node):
                span = f"index 0..{len(node) - 1}" if node else "no index: it is empty"
                return (
                    f"{label}: no such place in {source}: {here} is a list of "
                    f"{len(node)} item(s), {span} (got {key!r})"
                )
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        else:
            return (
                f"{label}: no such place in {source}: {here} holds {node!r}, "
                f"not a section with keys (so no {key!r} under it)"
            )
    return None


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides applied.

    Values are parsed as YAML scalars (``3`` is an int, ``0.5`` a float, ``null`` None).
    List items are addressed by index (``topology.edges.0.devices.1.count=5``). A missing
    key makes a section (the schema then says whether it belongs); a path through a plain
    value, a list index out of range or an unreadable value is a problem naming the
    ``--set`` item and the file.
    """
    out = copy.deepcopy(raw)
    problems = [p for item in overrides if (p := _set_one(out, item, source)) is not None]
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
    if not isinstance(raw, dict):
        empty = " (the file is empty)" if raw is None else ""
        raise InputError(f"{path}: (top level): expected a mapping of scenario keys{empty}")
    if overrides:
        raw = apply_overrides(raw, overrides, str(path))
    return scenario_from_dict(raw, str(path))


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """Return the resolved scenario as plain data (for run.json)."""
    return scenario.model_dump(mode="json")


def dump_yaml(data: dict[str, Any]) -> str:
    """Serialise plain data as YAML with keys in schema order."""
    return yaml.safe_dump(data, sort_keys=False)
