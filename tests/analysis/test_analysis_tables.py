import pytest

from analysis import (
    NOT_REACHED,
    load_run,
    load_runs,
    load_sweep,
    summary_table,
    target_table,
    time_breakdown,
    time_breakdown_table,
    to_markdown,
)


def test_time_breakdown_hand_computed(hand_run):
    tb = time_breakdown([load_run(hand_run)])
    row = tb.iloc[0]
    # round times 10, 15, 7.5, 17.5, 11 -> mean 12.2; compute 6, 8, 4, 10, 7 -> mean 7
    assert row["round_time_s"] == pytest.approx(12.2)
    assert row["compute_s"] == pytest.approx(7.0)
    assert row["compute_s_pct"] == pytest.approx(100 * 7.0 / 12.2)
    pct = sum(
        row[f"{p}_pct"]
        for p in ("download_s", "compute_s", "upload_s", "edge_s", "cloud_s", "wait_s")
    )
    assert pct == pytest.approx(100.0)
    text = time_breakdown_table([load_run(hand_run)])
    assert text.iloc[0]["Device compute"] == "7.00 (57.4 %)"
    assert text.iloc[0]["Round time (s)"] == "12.20"


def test_target_table_not_reached_is_explicit(tmp_path, make_hand_run):
    runs = load_runs(
        [make_hand_run(tmp_path / "a", seed=1), make_hand_run(tmp_path / "b", seed=2, shift_s=2.0)],
        labels=["x", "x"],
    )
    table = target_table(runs, "accuracy", 0.99)
    assert table.loc[0, "rounds"] == NOT_REACHED
    assert table.loc[0, "time_s"] == NOT_REACHED
    assert table.loc[0, "seeds"] == "0/2"
    assert "nan" not in to_markdown(table).lower()
    reached = target_table(runs, "accuracy", 0.8)
    assert reached.loc[0, "rounds"] == "3"  # both seeds: 3 rounds, no spread
    assert reached.loc[0, "time_s"].startswith("33.5 ± ")


def test_target_table_partly_reached_and_pivot(demo_sweep):
    rs = load_sweep(demo_sweep)
    table = target_table(rs, "accuracy", 0.5)
    assert list(table["rounds.participants"]) == ["3", "30"]
    assert all(NOT_REACHED not in c for c in table["rounds"])
    pivot = target_table(
        rs,
        "accuracy",
        0.5,
        by=["label", "rounds.participants"],
        index="label",
        columns="rounds.participants",
    )
    assert pivot.shape == (2, 2)
    assert (pivot == "not run").sum().sum() == 2  # each label has only one K
    assert "not run" in to_markdown(pivot, index=True)


def test_summary_table(hand_run):
    summ = summary_table([load_run(hand_run)])
    row = summ.iloc[0]
    assert row["rounds"] == 5 and row["virtual_time_s"] == 61.0
    assert row["final_accuracy"] == 0.91
    assert row["bytes_up"] == 500 and row["stragglers"] == 1 and row["dropped"] == 4
