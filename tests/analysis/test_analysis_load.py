import itertools
import json

import pandas as pd
import pytest

from fedsim.analysis import (
    config_labels,
    is_run_dir,
    is_sweep_dir,
    load,
    load_run,
    load_sweep,
    rounds_frame,
    target_table,
)


def test_load_run_reads_all_files(hand_run):
    run = load_run(hand_run)
    assert run.run_id == "hand_run"
    assert run.seed == 4
    assert list(run.rounds["round"]) == [1, 2, 3, 4, 5]
    assert pd.isna(run.rounds.loc[1, "accuracy"])  # not evaluated stays NaN in data
    assert set(run.device_rounds["status"]) == {"completed", "dropped", "straggler"}
    assert len(run.device_ua) == 12
    assert run.summary["bytes_up"] == 500
    assert run.label == "hand"


def test_phases_add_up_to_round_time(hand_run):
    frame = rounds_frame([load_run(hand_run)])
    phases = frame[["download_s", "compute_s", "upload_s", "wait_s", "edge_s", "cloud_s"]]
    assert (phases.sum(axis=1) - frame["round_time_s"]).abs().max() < 1e-9
    assert list(frame["round_index"]) == [1, 2, 3, 4, 5]
    assert list(frame["cum_bytes"]) == [220, 440, 660, 880, 1100]
    assert frame["cum_energy_j"].iloc[-1] == 15.0


def test_incomplete_run_folder_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "rounds.csv").write_text("version,round\n")
    with pytest.raises(FileNotFoundError, match="no run.json"):
        load_run(tmp_path / "x")


def test_missing_optional_files(hand_run):
    (hand_run / "device_ua.csv").unlink()
    (hand_run / "device_rounds.csv").unlink()
    run = load_run(hand_run)
    assert run.device_ua.empty and "accuracy" in run.device_ua.columns
    assert run.device_rounds.empty and "status" in run.device_rounds.columns


def test_load_sweep_and_dispatch(demo_sweep):
    assert is_sweep_dir(demo_sweep) and not is_run_dir(demo_sweep)
    rs = load_sweep(demo_sweep)
    assert rs.grid_keys == ["rounds.participants"]
    assert len(rs) == 6
    assert {r.params["rounds.participants"] for r in rs} == {"3", "30"}
    tidy = rs.rounds()
    assert {"run_id", "seed", "label", "rounds.participants", "accuracy"} <= set(tidy.columns)
    assert len(tidy) == 6 * 12
    assert len(load(demo_sweep)) == 6
    assert len(load(demo_sweep / "runs")) == 6  # a folder of run folders
    assert len(load(rs[0].run_dir)) == 1


def test_load_sweep_skips_runs_not_finished(tmp_path, make_hand_run):
    make_hand_run(tmp_path / "runs" / "a")
    (tmp_path / "runs" / "b").mkdir(parents=True)
    pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "k": ["1", "2"],
            "seed": ["1", "1"],
            "status": ["done", "failed"],
            "run_dir": ["runs/a", "runs/b"],
        }
    ).to_csv(tmp_path / "index.csv", index=False)
    (tmp_path / "sweep.json").write_text(json.dumps({"grid": {"k": ["1", "2"]}}))
    rs = load_sweep(tmp_path)
    assert [r.run_id for r in rs] == ["a"]
    assert rs[0].params == {"k": "1"}
    with pytest.raises(FileNotFoundError):
        load_sweep(tmp_path, complete_only=False)


def _edit_scenario(run_dir, **changes):
    """Change ``run.json``'s resolved scenario: ``section={key: value}`` or ``key=value``."""
    meta = json.loads((run_dir / "run.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            meta["scenario"].setdefault(key, {}).update(value)
        else:
            meta["scenario"][key] = value
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


def test_loose_runs_are_grouped_by_resolved_scenario(tmp_path, make_hand_run):
    # two scenarios named alike, with the same seeds: not four seeds of one configuration
    for k in (3, 5):
        for seed in (1, 2):
            run = make_hand_run(tmp_path / "runs" / f"k{k}-s{seed}", seed=seed)
            _edit_scenario(run, rounds={"participants": k})
    rs = load(tmp_path / "runs")
    assert [r.label for r in rs] == ["hand [participants=3]"] * 2 + ["hand [participants=5]"] * 2
    table = target_table(rs, "accuracy", 0.8)
    assert table["label"].tolist() == ["hand [participants=3]", "hand [participants=5]"]
    assert table["seeds"].tolist() == ["2/2", "2/2"]


def test_config_labels_name_and_differences(tmp_path, make_hand_run):
    counter = itertools.count()

    def run(name, seed=1, **changes):
        path = make_hand_run(tmp_path / f"run{next(counter)}", seed)
        return load_run(_edit_scenario(path, name=name, **changes))

    # different names: the name alone; a seed alone does not make another configuration
    assert config_labels([run("a"), run("a", seed=2), run("b")]) == ["a", "a", "b"]
    edges = {"topology": {"cloud": {"hardware": "x", "backhaul": "wan"}}}
    same_name = [run("hand"), run("hand", rounds={"deadline_s": 3.0}), run("hand", **edges)]
    assert config_labels(same_name) == [
        "hand [deadline_s=12.0, cloud.hardware=cloud_server]",
        "hand [deadline_s=3.0, cloud.hardware=cloud_server]",
        "hand [deadline_s=12.0, cloud.hardware=x]",
    ]
    many = {"stop": {"max_rounds": 9, "target_accuracy": 0.5}, "model": "cnn"}
    assert config_labels([run("hand"), run("hand", rounds={"cloud_every": 2}, **many)]) == [
        "hand #1",
        "hand #2",
    ]


def test_runs_of_two_sweeps_keep_apart(demo_sweep, tmp_path):
    from fedsim.analysis import RunSet, load_runs

    # Arrange: the same sweep's runs twice, as two sweeps of the same seeds would be
    runs = load_sweep(demo_sweep).runs

    # Act / Assert: combined as is, their ids repeat: refused with a clear message
    with pytest.raises(ValueError, match="run ids repeat"):
        RunSet(runs=[*runs, *load_sweep(demo_sweep).runs])
    # folders of the same name loaded as loose runs are told apart by their path
    dirs = [r.run_dir for r in runs[:1]]
    copy = tmp_path / "other" / dirs[0].name
    import shutil

    shutil.copytree(dirs[0], copy)
    loose = load_runs([dirs[0], copy])
    assert len({r.run_id for r in loose}) == 2
