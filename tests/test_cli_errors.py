"""Every bad input is one line on stderr naming the file and the field, and exit code 2.

Each case here once printed a Python traceback (exit 1), or a whole scenario dict, or lost
a finished run's results (issue 17). The hypothesis tests throw random ``--set`` paths and
values at ``validate`` and ``run``: the answer is always a clean exit (0 or 2), never a
traceback.
"""

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fedsim.api
from fedsim.cli import main

TINY = """\
name: tiny
seed: 1
model: digits_mlp
topology:
  edges:
    - name: e0
      devices:
        - {hardware: rpi4, link: wifi, count: 4}
rounds: {participants: 2}
stop: {max_rounds: 1}
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Run the CLI in-process; return the exit code and the non-empty stderr lines."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def one_error(capsys, *argv: str) -> str:
    """Assert exit 2 and exactly one stderr line, an ``error:``; return it."""
    code, err = cli(capsys, *argv)
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]


# --------------------------------------------------------------------------- --set paths


def test_set_through_a_scalar(tiny, capsys):
    line = one_error(capsys, "validate", tiny, "--set", "seed.a.b=1")
    assert str(tiny) in line and "seed.a.b" in line and "seed holds 1" in line


def test_set_into_a_list_out_of_range(tiny, capsys):
    line = one_error(capsys, "validate", tiny, "--set", "topology.edges.3.name=x")
    assert str(tiny) in line and "topology.edges is a list of 1 item(s)" in line


def test_empty_scenario_file_with_set(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    line = one_error(capsys, "validate", empty, "--set", "seed=1")
    assert (
        line
        == f"error: {empty}: (top level): expected a mapping of scenario keys (the file is empty)"
    )


# --------------------------------------------------------------------------- number bounds


@pytest.mark.parametrize(
    ("item", "field", "interval"),
    [
        ("rounds.over_selection=1e308", "rounds.over_selection", "[1, 10] (got 1e+308)"),
        ("rounds.over_selection=.inf", "rounds.over_selection", "[1, 10] (got inf)"),
        ("algorithm.params.lr=1e308", "algorithm.params.lr", "(0, 100] (got 1e+308)"),
        ("rounds.deadline_s=.inf", "rounds.deadline_s", "(0, 1e+09] s (got inf)"),
        ("rounds.deadline_s=1e308", "rounds.deadline_s", "(0, 1e+09] s"),
        (
            "topology.edges.0.access_mbps.wifi.up=.inf",
            "topology.edges[0].access_mbps.wifi.up",
            "[0.001, 1e+06] Mbps",
        ),
        ("data.partition.alpha=1e308", "data.partition.alpha", "(0, 1e+06] (got 1e+308)"),
        ("availability.mean_on_s=1e-308", "availability.mean_on_s", "[0.1, 1e+09] s"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_absurd_numbers_are_one_line(tiny, capsys, command, item, field, interval):
    out = ["--out", tiny.parent / "out"] if command == "run" else []
    line = one_error(capsys, command, tiny, "--set", item, *out)
    assert line.startswith(f"error: {tiny}: {field}"), line
    assert f"expected a number in {interval}" in line
    assert not (tiny.parent / "out").exists()


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch) -> Path:
    """A copy of the bundled profiles, used by the command (``$FEDSIM_PROFILES``)."""
    root = tmp_path / "profiles"
    for sub in ("devices", "networks"):
        shutil.copytree(REPO / "hardware_profiles" / sub, root / sub)
    monkeypatch.setenv("FEDSIM_PROFILES", str(root))
    return root


def _edit_profile(path: Path, keys: tuple[str, ...], value: object) -> None:
    raw = yaml.safe_load(path.read_text())
    node = raw
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    path.write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize(
    ("file", "keys", "value", "message"),
    [
        ("networks/wifi", ("up_mbps", "sigma", "value"), 1000, "[0, 5] (got 1000)"),
        ("networks/wifi", ("up_mbps", "median", "value"), float("inf"), "[0.001, 1e+06] Mbps"),
        ("networks/wifi", ("shared_mbps", "down", "value"), 1e308, "[0.001, 1e+06] Mbps"),
        ("devices/rpi4", ("compute", "flops_per_s", "value"), 1e308, "[1000, 1e+18] FLOP/s"),
        ("devices/rpi4", ("power_w", "compute", "value"), float("inf"), "(0, 10000] W (got inf)"),
        ("devices/rpi4", ("compute", "jitter_sigma", "value"), float("nan"), "[0, 5] (got nan)"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_absurd_profile_numbers_are_one_line(
    tiny, profiles, capsys, command, file, keys, value, message
):
    path = profiles / f"{file}.yaml"
    _edit_profile(path, keys, value)
    out = ["--out", tiny.parent / "out"] if command == "run" else []
    line = one_error(capsys, command, tiny, *out)
    assert line.startswith(f"error: {path}: {'.'.join(keys)}: expected a number in {message}")
    assert not (tiny.parent / "out").exists()


# --------------------------------------------------------------------------- output folders


def _no_run(monkeypatch) -> None:
    """Fail the test if the run gets as far as checking its scenario."""

    def boom(*args, **kwargs):
        raise AssertionError("the run started before its output folder was checked")

    monkeypatch.setattr(fedsim.api, "check", boom)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_out_that_cannot_be_made_is_refused_before_the_run(tiny, capsys, monkeypatch):
    _no_run(monkeypatch)
    line = one_error(capsys, "run", tiny, "--out", "/proc/nope/run1")
    assert line.startswith("error: /proc/nope/run1: cannot create the output folder")


def test_out_under_a_file_is_refused_before_the_run(tiny, capsys, monkeypatch):
    _no_run(monkeypatch)
    blocker = tiny.parent / "afile"
    blocker.write_text("x")
    line = one_error(capsys, "run", tiny, "--out", blocker / "run1")
    assert (
        line
        == f"error: {blocker / 'run1'}: cannot create the output folder: {blocker} is not a folder"
    )


@pytest.mark.parametrize("name", ["../escaped", '""', "a/b", ".hidden"])
def test_name_must_be_folder_safe(tiny, capsys, name):
    line = one_error(capsys, "run", tiny, "--set", f"name={name}")
    assert line.startswith(f"error: {tiny}: name: expected 1 to 100 letters")
    assert not (tiny.parent / "escaped-1").exists()


# --------------------------------------------------------------------------- report, sweep


def test_report_on_a_missing_folder(tmp_path, capsys):
    line = one_error(capsys, "report", tmp_path / "missing")
    assert (
        line == f"error: {tmp_path / 'missing'}: (folder): expected a run folder or a sweep folder"
    )


def test_report_on_an_empty_folder(tmp_path, capsys):
    line = one_error(capsys, "report", tmp_path)
    assert line.startswith(f"error: {tmp_path}: neither a run folder")


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_report_to_an_unwritable_path(tmp_path, capsys, where):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = blocker / "r.html" if where == "under a file" else tmp_path
    line = one_error(capsys, "report", tmp_path, "-o", target)
    assert line.startswith(f"error: {target}: (-o): cannot write the report")


def test_sweep_out_onto_a_file(tiny, capsys):
    blocker = tiny.parent / "afile"
    blocker.write_text("x")
    line = one_error(capsys, "sweep", tiny, "--out", blocker, "--grid", "rounds.participants=1,2")
    assert line == f"error: {blocker}: (--out): cannot make the sweep folder: {blocker} is a file"


def test_a_failing_sweep_run_is_one_line(tiny, capsys):
    code, err = cli(
        capsys, "sweep", tiny, "--out", tiny.parent / "sw",
        "--grid", "topology.edges.0.devices.0.hardware=no_such_board",
    )  # fmt: skip
    errors = [line for line in err if not line.startswith("sweep: ")]  # progress lines
    assert code == 2, err
    assert len(errors) == 1 and errors[0].startswith("error: sweep run "), err
    assert f"{tiny.resolve()}: topology.edges[0].devices[0].hardware: unknown device" in errors[0]
    assert "; log: " in errors[0]


# --------------------------------------------------------------------------- whole-dict messages


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("rounds.participants=9", "rounds.participants: 9 is larger than the 4 devices"),
        (
            "topology.edges=[{name: a, devices: [{hardware: rpi4, link: wifi, count: 1}]}, "
            "{name: a, devices: [{hardware: rpi4, link: wifi, count: 1}]}]",
            "topology.edges[1].name: edge names must be unique; edges[0] has this name too",
        ),
    ],
)
def test_cross_field_errors_do_not_print_the_scenario(tiny, capsys, item, expected):
    line = one_error(capsys, "validate", tiny, "--set", item)
    assert line.startswith(f"error: {tiny}: {expected}")
    assert "{" not in line and len(line) < 200


# --------------------------------------------------------------------------- validate = run


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            ["data.partition.kind=natural"],
            "data.partition.kind: 'natural' needs a dataset with users",
        ),
        (
            ["data.partition.kind=shards", "data.partition.shards_per_device=1000"],
            "data.partition: 4 devices x 1000 shards = 4000 shards",
        ),
        (
            ["topology.edges.0.devices.0.count=5000", "rounds.participants=2"],
            "data.partition: 5000 devices",
        ),
        (["topology.edges.0.devices.0.count=1000000000"], "topology.edges[0].devices[0].count: "),
        (
            ["topology.edges.0.devices.0.count=100000000000000000000"],
            "topology.edges[0].devices[0].count",
        ),
        (
            [
                "topology.edges.0.devices=[{hardware: rpi4, link: wifi, count: 9000000}, "
                "{hardware: rpi3b, link: wifi, count: 9000000}]"
            ],
            "topology.edges: the device counts add up to 18,000,000 devices; at most 10,000,000",
        ),
        (
            [
                "learning=false",
                "data.samples_per_device=1000000",
                "algorithm.params.batch_size=1",
                "algorithm.params.local_epochs=2",
            ],
            "algorithm.params: the busiest device (1,000,000 training samples) would take",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_rejects_what_run_rejects(tiny, capsys, command, sets, expected):
    argv = [command, tiny, *(a for s in sets for a in ("--set", s))]
    out = tiny.parent / "out"
    line = one_error(capsys, *argv, *(["--out", out] if command == "run" else []))
    assert line.startswith(f"error: {tiny}: {expected}"), line
    assert not out.exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_deadline_no_round_can_meet_is_a_warning(tiny, capsys, command):
    out = ["--out", tiny.parent / "out", "--quiet"] if command == "run" else []
    code, err = cli(capsys, command, tiny, "--set", "rounds.deadline_s=1e-308", *out)
    assert code == 0
    assert err == [
        f"warning: {tiny}: rounds.deadline_s: 1e-308 s is shorter than any device's round (at "
        "least a download and an upload, one round trip each: 0.02 s on link 'wifi', the "
        "fastest); no device can report, so no round will complete"
    ]


def test_the_real_entry_point_prints_no_traceback(tiny):
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim", "validate", str(tiny), "--set", "seed.a.b=1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_an_unexpected_exception_is_one_line_with_the_traceback_kept(tiny, capsys, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(fedsim.api, "check", bug)
    code, err = cli(capsys, "validate", tiny)
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: internal error: ZeroDivisionError: float division by zero")
    saved = Path(err[0].split("traceback in ")[1].rstrip(")"))
    assert "Traceback" in saved.read_text()
    saved.unlink()


# --------------------------------------------------------------------------- random --set

LEAVES = [
    "name", "seed", "model", "learning", "data.dataset", "data.dir", "data.options",
    "data.partition.kind", "data.partition.alpha", "data.partition.shards_per_device",
    "data.partition.test_per_device", "data.samples_per_device", "data.samples_sigma",
    "topology.cloud.hardware", "topology.edges.0.name", "topology.edges.0.trusted",
    "topology.edges.0.devices.0.count", "topology.edges.0.devices.0.hardware",
    "topology.edges.0.devices.0.link", "topology.edges.0.access_mbps.wifi.up",
    "topology.edges.0.devices.0.offload.use", "algorithm.use", "algorithm.params.lr",
    "algorithm.params.batch_size", "algorithm.params.local_epochs", "rounds.participants",
    "rounds.participation", "rounds.over_selection", "rounds.deadline_s",
    "rounds.min_report_fraction", "rounds.cloud_every", "rounds.failure_detection.kind",
    "rounds.failure_detection.timeout_s", "availability.kind", "availability.mean_on_s",
    "availability.mean_off_s", "network.contention", "offload.use", "offload.params.k",
    "offload.batches_per_step", "traces.bandwidth", "stop.max_rounds", "stop.max_virtual_s",
    "stop.target_accuracy", "evaluation.every", "evaluation.ua", "runtime.vectorize",
]  # fmt: skip
SCALARS = st.one_of(
    st.integers(-3, 12),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, 1e-308, 0.5, 1e7, 10**9, 10**20]),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.sampled_from(
        [
            "iid",
            "shards",
            "dirichlet",
            "natural",
            "synthetic",
            "on_off",
            "split",
            "full",
            "fastest",
            "local",
            "auto",
            "all",
            "rpi4",
            "wifi",
            "../x",
            "a:b",
        ]
    ),  # fmt: skip
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=2),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
)
PATHS = st.one_of(
    st.sampled_from(LEAVES),
    st.lists(st.sampled_from(["seed", "rounds", "topology", "edges", "0", "7", "a", "-1", ""]),
             min_size=1, max_size=4).map(".".join),
)  # fmt: skip


def _item(path: str, value: object) -> str:
    """Return ``path=value`` with the value written as one line of YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return f"{path}={text.removesuffix(chr(10)).removesuffix('...').strip()}"


SETS = st.lists(st.builds(_item, PATHS, VALUES), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "tiny.yaml"
    path.write_text(TINY)
    return path


def _clean_exit(argv: list[str]) -> None:
    """Run the CLI in-process; assert exit 0 or 2 and only ``error:``/``warning:`` lines."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code in (0, 2), (argv, lines)
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), (argv, lines)
    assert code == 0 or any(line.startswith("error: ") for line in lines), (argv, lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sets=SETS)
@example(sets=["='\n\n  '"])  # found by this test: a value with newlines, once two lines
@example(sets=['rounds={"\\r": null}'])  # and a key with a carriage return
def test_random_sets_never_crash_validate(tiny_module, sets):
    _clean_exit(["validate", str(tiny_module), *(f"--set={s}" for s in sets)])


RUNS = iter(range(10**6))
# fast: one round, inline, one local epoch on the small digits data (given last, they win)
PINNED = [
    "stop.max_rounds=1",
    "runtime.kind=inline",
    "algorithm.params.local_epochs=1",
    "data.dataset=digits",
]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sets=SETS)
def test_random_sets_never_crash_run(tiny_module, sets):
    out = tiny_module.parent / f"run{next(RUNS)}"
    argv = ["run", str(tiny_module), "--quiet", "--out", str(out)]
    _clean_exit([*argv, *(f"--set={s}" for s in [*sets, *PINNED])])


def test_report_on_an_unfinished_run_says_how_to_continue(tmp_path, capsys):
    (tmp_path / "run.partial.json").write_text("{}")
    line = one_error(capsys, "report", tmp_path)
    assert line == (
        f"error: {tmp_path}: the run is not complete (run.partial.json, no run.json): let it "
        f"finish, or continue it with: fedsim resume {tmp_path}"
    )
