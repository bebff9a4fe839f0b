"""Packaging: the wheel holds what a user needs, installed in a fresh venv and run from
another folder; the bundled scenarios and profiles; --version, scenarios, init."""

import os
import subprocess
import sys
import venv

import pytest
import tomllib
from helpers import REPO

from fedsim import __version__
from fedsim.bundled import PROFILES, SCENARIOS, bundled_dir, copy_scenario, scenario_names
from fedsim.cli import main
from fedsim.errors import InputError


def test_listed_packages_are_every_package_of_the_tree():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])  # fmt: skip
    tree = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fedsim").rglob("__init__.py")
    }
    assert listed == tree | {"fedsim.hardware_profiles", "fedsim.scenarios"}


def test_bundled_folders_in_a_checkout():
    assert bundled_dir(PROFILES) == REPO / "hardware_profiles"
    assert bundled_dir(SCENARIOS) == REPO / "scenarios"
    assert {"quickstart", "offloading/designer"} <= set(scenario_names())


def test_init_copies_a_starter_and_never_overwrites(tmp_path, capsys):
    assert main(["init", "--dir", str(tmp_path)]) == 0
    copied = tmp_path / "quickstart.yaml"
    assert copied.read_bytes() == (REPO / "scenarios" / "quickstart.yaml").read_bytes()
    assert f"fedsim run {copied}" in capsys.readouterr().out
    copied.write_text("mine")
    assert main(["init", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {copied}: already exists; nothing was copied (remove it or use --dir)"]
    assert copied.read_text() == "mine"
    assert main(["init", "nope", "--dir", str(tmp_path)]) == 2
    assert "unknown bundled scenario; known: " in capsys.readouterr().err


def test_copy_scenario_brings_its_traces(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "traces").mkdir(parents=True)
    (src / "traces" / "bw.csv").write_text("x")
    (src / "mine.yaml").write_text("name: mine\ntraces: {bandwidth: traces/bw.csv}\n")
    monkeypatch.setattr("fedsim.bundled.bundled_dir", lambda name: src)
    written = copy_scenario("mine", tmp_path / "out")
    assert written == [tmp_path / "out" / "mine.yaml", tmp_path / "out" / "traces" / "bw.csv"]
    assert written[1].read_text() == "x"
    with pytest.raises(InputError):
        copy_scenario("mine", tmp_path / "out")


def test_analysis_needs_no_simulator():
    code = ("import sys, fedsim.analysis; print(sorted(m for m in ('torch', 'ray', 'simpy', "
            "'fedsim.sim', 'fedsim.config') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_and_scenarios(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedsim {__version__}"
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "offloading/designer" in out


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_quickstart_from_another_folder(tmp_path):
    # build the wheel, install it (not editable) in a new venv that borrows the machine's
    # torch, ray, ... (--system-site-packages; no download), and use it from an empty folder;
    # --force-reinstall: pip would otherwise take the checkout's editable install of the same
    # version, visible through the system site-packages, as already satisfying the wheel
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(REPO)], check=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("fedsim-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", "--force-reinstall", str(wheel)], check=True,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FEDSIM_PROFILES", "PYTHONPATH")}

    def fedsim(*args):
        return subprocess.run([env_dir / "bin" / "fedsim", *args], cwd=work, env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip

    where = subprocess.run([python, "-c", "import fedsim; print(fedsim.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert str(env_dir) in where.stdout  # the wheel's copy, not the checkout
    assert fedsim("--version").stdout.strip() == f"fedsim {__version__}"
    profiles = fedsim("profiles")
    assert profiles.returncode == 0 and "rpi4" in profiles.stdout, profiles.stderr
    assert fedsim("init").returncode == 0
    done = fedsim("run", "quickstart.yaml", "--out", "run1", "--quiet", "--set",
                  "stop.max_rounds=3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (work / "run1" / "rounds.csv").is_file()
    report = fedsim("report", "run1")
    assert report.returncode == 0, report.stderr
    assert (work / "run1" / "report.html").stat().st_size > 10_000
    no_analysis = subprocess.run([python, "-c", "import analysis"], cwd=work, env=env,
                                 capture_output=True, text=True, check=False)  # fmt: skip
    assert no_analysis.returncode != 0  # no top-level 'analysis' package in site-packages
