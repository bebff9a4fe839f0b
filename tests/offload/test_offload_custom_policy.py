"""The worked custom policy of docs/offloading.md (docs/examples/battery_saver.py), run for
real: which devices it offloads, what that shows in the result files, and the messages a
scenario naming a custom policy gets when the name or the params are wrong."""

import pytest
from helpers import REPO

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.errors import InputError

EXAMPLES = REPO / "docs" / "examples"
SCENARIO = EXAMPLES / "battery_saver.yaml"
MODEL_BYTES = 268_440  # perfit_3nn on the digits: 67,110 float32 parameters
PART_BYTES = 104_000  # its first layer, Linear(64, 400): what a split(1) device moves


@pytest.fixture
def examples_importable(monkeypatch):
    """Put docs/examples on the import path, as PYTHONPATH=docs/examples does."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _run(tmp_path, name, overrides):
    scenario = load_scenario(SCENARIO, ["stop.max_rounds=3", *overrides])
    return run(scenario, tmp_path / name, source=str(SCENARIO))


def _plans(result, profile):
    rows = result.device_rounds
    return set(rows.loc[rows.profile == profile, "plan"])


@pytest.mark.usefixtures("examples_importable")
def test_battery_saver_splits_the_devices_it_saves_energy_for(tmp_path):
    saver = _run(tmp_path, "saver", [])
    local = _run(tmp_path, "local", ["offload.use=local", "offload.params={}"])
    rows = saver.device_rounds

    # rpi3b: over the 2 J budget; split(1) is estimated to save 17-40 % -> offloaded.
    # rpi4: over budget, but the home gateway is no faster: no split saves 10 % -> local.
    # Phones: over budget, but activations over 4G/3G cost about what they save -> local.
    assert _plans(saver, "rpi3b") == {"split(1)"}
    assert _plans(saver, "rpi4") == {"local"}
    assert _plans(saver, "phone_mid") == _plans(saver, "phone_low") == {"local"}
    # rpi2b: device 8 and 9 split; 10 is within the budget; 11 would split alone, but by
    # its turn six devices share the gateway and the saving falls below min_saving (10 %)
    by_device = rows[rows.profile == "rpi2b"].groupby("device_id").plan.agg(set)
    assert by_device.to_dict() == {8: {"split(1)"}, 9: {"split(1)"}, 10: {"local"}, 11: {"local"}}
    assert list(saver.rounds.offloaded) == [6, 6, 6]

    split = rows[rows.plan == "split(1)"]
    kept_local = rows[rows.plan == "local"]
    assert (split.act_bytes_up > 0).all() and (split.act_bytes_up == split.act_bytes_down).all()
    assert (split.edge_compute_s > 0).all() and (split.edge_queue_s > 0).all()  # 6 share it
    assert (split.edge_id == 0).all()  # the home gateway
    assert (split.data_bytes_up == 0).all() and not split.raw_data_left.any()
    done = kept_local[kept_local.status == "completed"]  # the discarded are cut at the close
    assert set(split.bytes_up) == {PART_BYTES} and set(done.bytes_up) == {MODEL_BYTES}
    assert (kept_local[["act_bytes_up", "edge_compute_s"]] == 0).all().all()

    # bytes_up in rounds.csv counts every byte on the links, activations included
    r = saver.rounds
    assert list(r.act_bytes_up) == list(r.act_bytes_down)
    assert (r.bytes_up > r.act_bytes_up).all()

    # the offloaded devices spend fewer joules computing, and fewer in all
    def per_profile(result, column):
        return result.device_rounds.groupby("profile")[column].sum()

    assert per_profile(saver, "energy_compute_j")["rpi3b"] < (
        0.5 * per_profile(local, "energy_compute_j")["rpi3b"]
    )
    assert per_profile(saver, "energy_j")["rpi3b"] < per_profile(local, "energy_j")["rpi3b"]
    # ... and learn exactly the same model: split training computes the same update
    assert list(saver.rounds.accuracy) == list(local.rounds.accuracy)


@pytest.mark.usefixtures("examples_importable")
def test_battery_saver_params_change_its_choices(tmp_path):
    roomy = _run(tmp_path, "roomy", ["offload.params.budget_j=1000.0", "learning=false"])
    assert set(roomy.device_rounds.plan) == {"local"}
    assert list(roomy.rounds.offloaded) == [0, 0, 0]

    # no offload is estimated to make a 0.5 s deadline: every device stays local
    tight = _run(tmp_path, "tight", ["rounds.deadline_s=0.5", "learning=false"])
    assert set(tight.device_rounds.plan) == {"local"}

    # allow_full: the home devices hand their data to the trusted gateway once; the
    # operator's edge is not trusted, so its phones never do
    full = _run(tmp_path, "full", ["offload.params.allow_full=true", "learning=false"])
    rows = full.device_rounds
    assert set(rows.loc[rows.edge_id == 1, "plan"]) == {"local"}
    handed = rows[rows.plan == "full"]
    assert len(handed) > 0 and (handed.edge_id == 0).all()
    first = handed.groupby("device_id")["round"].transform("min") == handed["round"]
    assert (handed[first].data_bytes_up > 0).all() and handed[first].raw_data_left.all()
    assert (handed[~first].data_bytes_up == 0).all()
    assert (handed.bytes_up == 0).all() and (handed.act_bytes_up == 0).all()

    # a device group's own offload overrides the scenario's: the rpi3b group trains locally
    group = _run(
        tmp_path, "group", ["topology.edges.0.devices.1.offload.use=local", "learning=false"]
    )
    assert _plans(group, "rpi3b") == {"local"}
    assert _plans(group, "rpi2b") >= {"split(1)"}


@pytest.mark.usefixtures("examples_importable")
@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("offload.use=battery_saver:BatterySaving", "offload.use", "no class 'BatterySaving'"),
        ("offload.use=no_such_module_xyz:Policy", "offload.use", "cannot import module"),
        ("offload.use=battery_saver", "offload.use", "unknown offloading policy"),
        ("offload.params.budget_j=-1.0", "offload.params.budget_j", "greater than 0"),
        ("offload.params.budget=2.0", "offload.params.budget", "unknown key"),
        (
            "topology.edges.0.devices.1.offload.use=battery_saver:Nope",
            "topology.edges[0].devices[1].offload.use",
            "no class 'Nope'",
        ),
    ],
)
def test_a_bad_custom_policy_is_named_in_the_message(tmp_path, override, field, words):
    scenario = load_scenario(SCENARIO, [override])
    with pytest.raises(InputError) as err:
        run(scenario, tmp_path / "out", source=str(SCENARIO))
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert problem.startswith(f"{SCENARIO}: {field}: ") and words in problem
    assert not (tmp_path / "out").exists()


def test_the_doc_lists_the_example_as_it_is():
    doc = (REPO / "docs" / "offloading.md").read_text()
    source = (EXAMPLES / "battery_saver.py").read_text()
    assert f"```python\n{source}```" in doc
    assert "PYTHONPATH=docs/examples python -m fedsim run docs/examples/battery_saver.yaml" in doc
