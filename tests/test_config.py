"""Scenario validation: strict schema, every problem at once, clear messages."""

from pathlib import Path

import pytest

from fedsim.config import apply_overrides, load_scenario
from fedsim.errors import InputError

VALID = """\
name: t
seed: 3
model: digits_mlp
topology:
  edges:
    - name: e0
      devices:
        - {hardware: rpi4, link: wifi, count: 4}
rounds: {participants: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, overrides=None) -> list[str]:
    with pytest.raises(InputError) as info:
        load_scenario(write(tmp_path, text), overrides)
    assert info.value.exit_code == 2
    return info.value.problems


def test_valid_scenario_has_defaults(tmp_path):
    sc = load_scenario(write(tmp_path, VALID))
    assert sc.seed == 3
    assert sc.topology.num_devices() == 4
    assert sc.algorithm.use == "fedavg"
    assert sc.runtime.kind == "inline"


def test_unknown_key_names_file_and_field(tmp_path):
    lines = problems(tmp_path, VALID + "colour: blue\n")
    assert lines == [f"{tmp_path / 's.yaml'}: colour: unknown key"]


def test_every_problem_reported_at_once(tmp_path):
    text = VALID.replace("seed: 3", "seed: three").replace("count: 4", "count: -1")
    lines = problems(tmp_path, text + "rounds2: {}\n")
    joined = "\n".join(lines)
    assert len(lines) == 3
    assert "seed:" in joined and "topology.edges[0].devices[0].count:" in joined
    assert "rounds2: unknown key" in joined


def test_wrong_type_is_not_coerced(tmp_path):
    lines = problems(tmp_path, VALID.replace("participants: 2", "participants: '2'"))
    assert "rounds.participants" in lines[0]


def test_duplicate_key_is_an_error(tmp_path):
    lines = problems(tmp_path, VALID + "seed: 4\n")
    assert "duplicate key 'seed'" in lines[0]
    assert "line 10" in lines[0] and "first at line 2" in lines[0]


def test_unreadable_yaml(tmp_path):
    lines = problems(tmp_path, "seed: [1, 2\n")
    assert "unreadable YAML" in lines[0]


def test_unsafe_tag_rejected(tmp_path):
    lines = problems(tmp_path, "seed: !!python/object/apply:os.system ['true']\n")
    assert "unreadable YAML" in lines[0]


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_participants_larger_than_population(tmp_path):
    lines = problems(tmp_path, VALID.replace("participants: 2", "participants: 9"))
    assert "larger than the 4 devices" in lines[0]


def test_count_and_fraction_are_exclusive(tmp_path):
    lines = problems(
        tmp_path, VALID.replace("participants: 2", "participants: 2, participation: 0.5")
    )
    assert "either participants" in lines[0]


def test_overrides_apply_with_yaml_types(tmp_path):
    sc = load_scenario(
        write(tmp_path, VALID),
        ["rounds.participants=3", "topology.edges.0.devices.0.count=6", "rounds.deadline_s=2.5"],
    )
    assert sc.rounds.participants == 3
    assert sc.topology.edges[0].devices[0].count == 6
    assert sc.rounds.deadline_s == 2.5


def test_bad_override_path():
    with pytest.raises(InputError, match="no such place"):
        apply_overrides({"a": [1]}, ["a.5=3"], "s.yaml")
    with pytest.raises(InputError, match="expected key.path=value"):
        apply_overrides({}, ["nonsense"], "s.yaml")


def test_samples_per_device_only_without_learning(tmp_path):
    lines = problems(tmp_path, VALID + "data: {samples_per_device: 50}\n")
    assert lines == [
        f"{tmp_path / 's.yaml'}: data.samples_per_device: only allowed with learning: false "
        "(training needs a partitioned dataset) (got 50)"
    ]
    sc = load_scenario(write(tmp_path, VALID + "learning: false\ndata: {samples_per_device: 50}\n"))
    assert (sc.data.samples_per_device, sc.data.samples_sigma) == (50, 0.0)


def test_samples_options_are_checked(tmp_path):
    text = VALID + "learning: false\ndata: {samples_per_device: 0, samples_sigma: -1}\n"
    joined = "\n".join(problems(tmp_path, text))
    assert "data.samples_per_device: Input should be greater than 0" in joined
    assert "data.samples_sigma: expected a number in [0, 5] (got -1)" in joined
    lines = problems(tmp_path, VALID + "learning: false\ndata: {samples_sigma: 0.5}\n")
    assert lines == [
        f"{tmp_path / 's.yaml'}: data.samples_sigma: needs data.samples_per_device (got 0.5)"
    ]
    lines = problems(tmp_path, VALID + "learning: false\ndata: {samples_per_device: '5'}\n")
    assert "data.samples_per_device" in lines[0]  # strict: a string is not a count


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", True), ("false", False)])
def test_vectorize_takes_auto_or_a_bool(tmp_path, value, expected):
    sc = load_scenario(write(tmp_path, VALID), [f"runtime.vectorize={value}"])
    assert sc.runtime.vectorize == expected
    assert load_scenario(write(tmp_path, VALID)).runtime.vectorize == "auto"


def test_vectorize_rejects_other_words(tmp_path):
    lines = problems(tmp_path, VALID + "runtime: {vectorize: sometimes}\n")
    assert any("runtime.vectorize" in line for line in lines)
