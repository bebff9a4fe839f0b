"""What ``fedsim validate`` tells about trust and the installation: the modules a scenario
imports, and a Ray dashboard that cannot start."""

import pytest
from helpers import REPO

from fedsim.checks import scenario_imports
from fedsim.cli import main
from fedsim.config import load_scenario
from fedsim.registry import module_to_import
from fedsim.runtime.ray_setup import dashboard_missing

QUICKSTART = str(REPO / "scenarios" / "quickstart.yaml")
BATTERY = str(REPO / "docs" / "examples" / "battery_saver.yaml")


def test_validate_lists_the_modules_a_scenario_imports(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "docs" / "examples"))
    assert main(["validate", BATTERY]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["imports: battery_saver (offload.use)"]
    assert main(["validate", QUICKSTART]) == 0  # built-in names only: no imports line
    assert not [line for line in capsys.readouterr().out.splitlines() if "imports" in line]


def test_scenario_imports_names_every_field_that_is_used():
    sc = load_scenario(
        QUICKSTART,
        [
            "algorithm.use=my_lab.algos:FedThing",
            "offload.use=my_lab.policies:Greedy",  # used by the groups without their own
            "topology.edges.1.devices.0.offload.use=my_lab.policies:Greedy",
            "topology.edges.1.devices.1.offload.use=split",
        ],
    )
    assert scenario_imports(sc) == {
        "my_lab.algos": ["algorithm.use"],
        "my_lab.policies": ["offload.use", "topology.edges[1].devices[0].offload.use"],
    }
    every_group_own = load_scenario(
        QUICKSTART,
        ["offload.use=unused_mod:X"]
        + [f"topology.edges.{i}.devices.{j}.offload.use=local" for i in (0, 1) for j in (0, 1)],
    )
    assert scenario_imports(every_group_own) == {}


def test_module_to_import():
    builtins = {"fedavg": "fedsim.algorithms.fedavg:FedAvg"}
    assert module_to_import("fedavg", builtins) is None
    assert module_to_import("pkg.mod:Cls", builtins) == "pkg.mod"
    assert module_to_import("nonsense", builtins) is None


@pytest.mark.skipif(
    dashboard_missing() is None, reason="Ray's dashboard packages are installed: nothing to refuse"
)
def test_dashboard_without_its_packages_is_refused_at_validation(capsys):
    sets = ["--set", "runtime.kind=ray", "--set", "runtime.dashboard=true"]
    assert main(["validate", QUICKSTART, *sets]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {QUICKSTART}: runtime.dashboard: ")
    assert "pip install 'ray[default]'" in err[0]
    # inline runs ignore the flag
    assert main(["validate", QUICKSTART, "--set", "runtime.dashboard=true"]) == 0
