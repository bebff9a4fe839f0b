"""Every number of a scenario or a profile has a physical range (fedsim/bounds.py).

The bound itself is accepted; beyond it, ``inf`` and ``nan`` are one problem naming the
file, the field, the range and the value.
"""

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fedsim.bounds import interval_text
from fedsim.config import apply_overrides, load_scenario, short_repr, validation_problems
from fedsim.data import load_dataset
from fedsim.errors import InputError, naming
from fedsim.profiles import DeviceFile, LinkFile
from fedsim.yamlio import load_yaml_text

GROUP = {"hardware": "rpi4", "link": "wifi", "count": 4}
BASE = {
    "name": "t",
    "seed": 3,
    "model": "digits_mlp",
    "topology": {"edges": [{"name": "e0", "devices": [GROUP]}]},
}

# (path, largest or smallest accepted, first refused, interval in the message)
SCENARIO_BOUNDS = [
    ("rounds.over_selection", 10.0, 10.5, "[1, 10]"),
    ("rounds.over_selection", 1.0, 0.99, "[1, 10]"),
    ("rounds.deadline_s", 1e9, 1.1e9, "(0, 1e+09] s"),
    ("rounds.deadline_s", 1e-9, 0.0, "(0, 1e+09] s"),
    ("rounds.participation", 1.0, 1.01, "(0, 1]"),
    ("rounds.min_report_fraction", 1.0, 1.5, "[0, 1]"),
    ("rounds.failure_detection.timeout_s", 1e9, 2e9, "(0, 1e+09] s"),
    ("availability.mean_on_s", 0.1, 0.09, "[0.1, 1e+09] s"),
    ("availability.mean_off_s", 1e9, 1e10, "[0.1, 1e+09] s"),
    ("stop.max_virtual_s", 1e9, 1e12, "(0, 1e+09] s"),
    ("stop.target_accuracy", 1.0, 1.1, "(0, 1]"),
    ("stop.target_ua", 1.0, 1.1, "(0, 1]"),
    ("runtime.timeout_s", 1e6, 1e7, "(0, 1e+06] s"),
    ("data.partition.alpha", 1e6, 1e7, "(0, 1e+06]"),
    ("data.samples_sigma", 5.0, 5.5, "[0, 5]"),
    ("topology.edges.0.access_mbps.wifi.up", 1e6, 1e7, "[0.001, 1e+06] Mbps"),
    ("topology.edges.0.access_mbps.wifi.down", 1e-3, 1e-4, "[0.001, 1e+06] Mbps"),
]


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def problems(path: Path, sets: list[str]) -> list[str]:
    with pytest.raises(InputError) as info:
        load_scenario(path, sets)
    return info.value.problems


@pytest.mark.parametrize(("field", "ok", "bad", "interval"), SCENARIO_BOUNDS)
def test_scenario_numbers_are_bounded(tmp_path, field, ok, bad, interval):
    raw = {**BASE, "learning": False} if field.startswith("data.samples") else BASE
    extra = ["data.samples_per_device=10"] if field.startswith("data.samples") else []
    path = write(tmp_path, raw)
    load_scenario(path, [*extra, f"{field}={ok!r}"])
    for value in (bad, math.inf, -math.inf, math.nan):
        text = {math.inf: ".inf", -math.inf: "-.inf"}.get(value, repr(value))
        text = ".nan" if value != value else text
        (line,) = problems(path, [*extra, f"{field}={text}"])
        shown = field.replace(".0.", "[0].")
        assert line.startswith(f"{path}: {shown}: expected a number in {interval} (got "), line


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [
        ("topology.edges.0.devices.0.count", 10**7, 10**7 + 1),
        ("stop.max_rounds", 10**7, 10**8),
        ("seed", 2**63 - 1, 2**63),
        ("algorithm.params.local_epochs", 1000, 1001),
        ("runtime.workers", 1024, 1025),
        ("data.partition.shards_per_device", 10**6, 10**6 + 1),
    ],
)
def test_counts_are_bounded(tmp_path, field, ok, bad):
    path = write(tmp_path, BASE)
    load_scenario(path, [f"{field}={ok}"])
    if field.startswith("algorithm"):
        return  # the algorithm's params are checked with the algorithm (test below)
    (line,) = problems(path, [f"{field}={bad}"])
    assert line.startswith(f"{path}: {field.replace('.0.', '[0].')}: Input should be less than")


def test_algorithm_params_are_bounded():
    from fedsim.algorithms.base import build_algorithm
    from fedsim.config import AlgorithmSpec

    build_algorithm(AlgorithmSpec(params={"lr": 100.0, "local_epochs": 1000}), "s.yaml")
    for params, field in [
        ({"lr": 1e308}, "lr: expected a number in (0, 100] (got 1e+308)"),
        ({"lr": math.inf}, "lr: expected a number in (0, 100] (got inf)"),
        ({"local_epochs": 1001}, "local_epochs: Input should be less than or equal to 1000"),
        ({"batch_size": 10**7}, "batch_size: Input should be less than or equal to 1000000"),
    ]:
        with pytest.raises(InputError) as info:
            build_algorithm(AlgorithmSpec(params=params), "s.yaml")
        assert info.value.problems[0].startswith(f"s.yaml: algorithm.params.{field}")


def test_the_whole_population_is_bounded(tmp_path):
    group = {"hardware": "rpi4", "link": "wifi", "count": 6_000_000}
    raw = {**BASE, "topology": {"edges": [{"name": "e0", "devices": [group, group]}]}}
    (line,) = problems(write(tmp_path, raw), [])
    assert line == (
        f"{tmp_path / 's.yaml'}: topology.edges: the device counts add up to 12,000,000 "
        "devices; at most 10,000,000 are supported (the simulator keeps a few numbers per "
        "device) (got 12000000)"
    )


@pytest.mark.parametrize("name", ["quickstart", "mnist_2nn", "k=5", "a.b-c_d+e", "x" * 100])
def test_folder_safe_names_are_accepted(tmp_path, name):
    assert load_scenario(write(tmp_path, {**BASE, "name": name})).name == name


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "-x", "x" * 101, "a b"])
def test_unsafe_names_are_refused(tmp_path, name):
    (line,) = problems(write(tmp_path, {**BASE, "name": name}), [])
    assert line.startswith(f"{tmp_path / 's.yaml'}: name: expected 1 to 100 letters")


# --------------------------------------------------------------------------- profiles

DEVICE = {
    "name": "board",
    "tier": "device",
    "description": "d",
    "compute": {
        "flops_per_s": {"value": 1e9, "source": "s"},
        "overhead_s_per_step": {"value": 0.01, "source": "s"},
        "jitter_sigma": {"value": 0.1, "source": "s"},
    },
    "memory_bytes": {"value": 2**30, "source": "s"},
    "power_w": {
        k: {"value": 2.0, "source": "s"} for k in ("compute", "transmit", "receive", "idle")
    },
}
LINK = {
    "name": "lan",
    "description": "l",
    "up_mbps": {"median": {"value": 10.0, "source": "s"}, "sigma": {"value": 0.3, "source": "s"}},
    "down_mbps": {"median": {"value": 10.0, "source": "s"}, "sigma": {"value": 0.3, "source": "s"}},
    "rtt_ms": {"value": 10.0, "source": "s"},
    "shared_mbps": {"up": {"value": 50.0, "source": "s"}, "down": {"value": 50.0, "source": "s"}},
    "device_sigma": {"value": 0.3, "source": "s"},
}


def _with(raw: dict, keys: tuple[str, ...], value: object) -> dict:
    out = yaml.safe_load(yaml.safe_dump(raw))
    node = out
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return out


@pytest.mark.parametrize(
    ("schema", "keys", "ok", "bad", "interval"),
    [
        (DeviceFile, ("compute", "flops_per_s"), 1e18, 1e19, "[1000, 1e+18] FLOP/s"),
        (DeviceFile, ("compute", "flops_per_s"), 1e3, 999.0, "[1000, 1e+18] FLOP/s"),
        (DeviceFile, ("compute", "overhead_s_per_step"), 3600.0, 3601.0, "[0, 3600] s"),
        (DeviceFile, ("compute", "jitter_sigma"), 5.0, 6.0, "[0, 5]"),
        (DeviceFile, ("power_w", "idle"), 1e4, 1.1e4, "(0, 10000] W"),
        (DeviceFile, ("power_w", "compute"), 1e-6, 0.0, "(0, 10000] W"),
        (LinkFile, ("up_mbps", "median"), 1e6, 2e6, "[0.001, 1e+06] Mbps"),
        (LinkFile, ("down_mbps", "sigma"), 5.0, 1000.0, "[0, 5]"),
        (LinkFile, ("rtt_ms",), 1e5, 2e5, "(0, 100000] ms"),
        (LinkFile, ("shared_mbps", "up"), 1e-3, 1e-4, "[0.001, 1e+06] Mbps"),
        (LinkFile, ("device_sigma",), 0.0, -0.1, "[0, 5]"),
    ],
)
def test_profile_numbers_are_bounded(schema, keys, ok, bad, interval):
    raw = DEVICE if schema is DeviceFile else LINK
    schema.model_validate(_with(raw, (*keys, "value"), ok))
    for value in (bad, math.inf, math.nan):
        with pytest.raises(ValidationError) as info:
            schema.model_validate(_with(raw, (*keys, "value"), value))
        (line,) = validation_problems("p.yaml", info.value)
        assert line.startswith(f"p.yaml: {'.'.join(keys)}.value: expected a number in {interval}")


# --------------------------------------------------------------------------- helpers


def test_interval_text():
    assert interval_text(0, 100, low_open=True) == "(0, 100]"
    assert interval_text(1e-3, 1e6, "Mbps") == "[0.001, 1e+06] Mbps"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("seed.a=1", "--set seed.a=1: no such place in s.yaml: seed holds 3, not a section"),
        ("topology.edges.1.name=x", "topology.edges is a list of 1 item(s), index 0..0 (got '1')"),
        ("topology.edges.-1.name=x", "(got '-1')"),
        ("topology.edges.x=1", "(got 'x')"),
        (
            "topology..edges=1",
            "--set topology..edges=1: expected key.path=value, with no empty key",
        ),
        ("=1", "expected key.path=value, with no empty key"),
        ("seed=[1,", "--set seed=[1,: line 1, column 4: unreadable YAML"),
        ("seed=" + "9" * 5000, "unreadable YAML: Exceeds the limit (4300 digits)"),
    ],
)
def test_bad_set_paths_are_one_problem(item, expected):
    with pytest.raises(InputError) as info:
        apply_overrides(BASE, [item], "s.yaml")
    (line,) = info.value.problems
    assert expected in line, line


def test_set_into_an_empty_list():
    with pytest.raises(InputError, match=r"a list of 0 item\(s\), no index: it is empty"):
        apply_overrides({"a": []}, ["a.0=1"], "s.yaml")


def test_set_algorithm_params_without_an_algorithm_section(tmp_path):
    sc = load_scenario(write(tmp_path, BASE), ["algorithm.params.lr=0.05"])
    assert (sc.algorithm.use, sc.algorithm.params) == ("fedavg", {"lr": 0.05})


def test_short_repr_keeps_a_line_short():
    assert short_repr(3) == "3"
    assert short_repr("x" * 200).endswith("...") and len(short_repr("x" * 200)) == 80
    assert short_repr(10**5000) == f"an integer of {(10**5000).bit_length()} bits"


def test_deep_yaml_is_one_problem():
    with pytest.raises(InputError, match="unreadable YAML"):
        load_yaml_text("[" * 100_000, "s.yaml")


def test_naming_prefixes_lines_that_do_not_name_the_file():
    err = naming("s.yaml", InputError(["data.partition: x", "s.yaml: model: y", "  more"]))
    assert err.problems == ["s.yaml: data.partition: x", "s.yaml: model: y", "  more"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"num_samples": 10**8}, "data.options.num_samples: expected a number in [2, 1e+07]"),
        ({"alpha": math.inf}, "data.options.alpha: expected a number in [0, 1e+06], got inf"),
        ({"beta": math.nan}, "data.options.beta: expected a number in [0, 1e+06], got nan"),
        ({"size_sigma": 10**400}, "data.options.size_sigma: expected a number in [0, 5]"),
        (
            {"num_samples": 10**6, "num_features": 1000},
            "num_samples x num_features = 1,000,000,000",
        ),
    ],
)
def test_synthetic_options_are_bounded(options, expected):
    with pytest.raises(InputError) as info:
        load_dataset("synthetic", None, 0, **options)
    assert any(expected in line for line in info.value.problems), info.value.problems
