import pytest
from demo import write_run

from fedsim.analysis import (
    NOT_REACHED,
    critical_devices,
    critical_path,
    critical_path_table,
    load,
    load_run,
    load_runs,
    load_sweep,
    summary_table,
    table4_comparison,
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
    # two seeds: no t-interval (it would read 33.5 ± 12.7 s), the min–max instead
    assert reached.loc[0, "time_s"] == "33.5 s (min–max 32.5–34.5, n = 2)"


def test_target_table_interval_over_three_seeds_and_clipped(tmp_path, make_hand_run):
    paths = [make_hand_run(tmp_path / f"s{i}", seed=i, shift_s=s) for i, s in enumerate([0, 3, 6])]
    table = target_table(load_runs(paths, labels=["x"] * 3), "accuracy", 0.8)
    half = 4.302652729749464 * 3 / 3**0.5  # t(0.975, 2) * sd / sqrt(n)
    assert table.loc[0, "time_s"] == f"35.5 ± {half:.1f} s"
    # seeds reaching 0.5 at 10, 10 and 127 s: the interval (-119, 217) is clipped at 0 s
    paths = [
        make_hand_run(tmp_path / f"c{i}", seed=i, shift_s=s) for i, s in enumerate([0, 0, 117])
    ]
    cell = target_table(load_runs(paths, labels=["x"] * 3), "accuracy", 0.5).loc[0, "time_s"]
    mean, high = 49.0, 49.0 + 4.302652729749464 * (117 / 3**0.5) / 3**0.5
    assert cell == f"{mean:.1f} [0.0, {high:.1f}] s"


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


# -- critical path (MTFL Table 4 view) -------------------------------------------------------

# (round, start, end, edge_s, cloud_s, devices); a device is
# (device_id, status, end offset, download_s, compute_s, upload_s)
CP_ROUNDS = [
    # the slowest completed device (1, ends at 12) is on the critical path; device 3 was
    # discarded later and does not count; the round waited for all: Other = 0
    (
        0, 0.0, 12.5, 0.4, 0.1,
        [
            (0, "completed", 9.0, 1.0, 7.0, 1.0),
            (1, "completed", 12.0, 2.0, 8.0, 2.0),
            (2, "completed", 11.0, 1.0, 9.0, 1.0),
            (3, "discarded", 14.0, 1.0, 12.0, 1.0),
        ],
    ),
    # devices 3 and 1 tie at 10 s: the smaller id wins; straggler 0 ends there too, ignored
    (
        1, 12.5, 23.0, 0.4, 0.1,
        [
            (3, "completed", 10.0, 1.0, 8.0, 1.0),
            (0, "straggler", 10.0, 1.0, 9.0, 0.0),
            (1, "completed", 10.0, 2.0, 6.0, 2.0),
        ],
    ),
    # nobody completed before the 15 s deadline: Server (a pending cloud sync) + Other
    (
        2, 23.0, 38.2, 0.0, 0.2,
        [
            (0, "straggler", 15.0, 1.0, 14.0, 0.0),
            (1, "dropped", 4.0, 1.0, 3.0, 0.0),
        ],
    ),
]  # fmt: skip


def write_cp_run(run_dir, seed=1, name="tb", failed_round=True):
    rounds, devices = [], []
    for r, start, end, edge, cloud, devs in CP_ROUNDS:
        if r == 2 and not failed_round:
            continue
        rounds.append(
            dict(
                version=r + 1, round=r, round_start_s=start, virtual_time_s=end,
                participants=len(devs), completed=0, stragglers=0, dropped=0, bytes_up=0,
                bytes_down=0, energy_j=0.0, download_s=0.0, compute_s=0.0, upload_s=0.0,
                wait_s=0.0, edge_s=edge, cloud_s=cloud,
            )
        )  # fmt: skip
        for d, status, off, dl, cp, ul in devs:
            devices.append(
                dict(
                    round=r, device_id=d, edge_id=0, profile="slow" if d == 1 else "fast",
                    link="wifi", status=status, start_s=start, end_s=start + off,
                    download_s=dl, compute_s=cp, upload_s=ul, wait_s=0.0, bytes_up=0,
                    bytes_down=0, energy_j=0.0,
                )
            )  # fmt: skip
    meta = {"seed": seed, "scenario": {"name": name, "seed": seed}}
    return write_run(run_dir, meta, rounds, devices)


def test_critical_devices_slowest_ties_and_empty_round(tmp_path):
    frame = critical_devices(load(write_cp_run(tmp_path / "a")))
    assert list(frame["round"]) == [0, 1, 2]
    assert list(frame["device_id"][:2]) == [1, 1]
    assert frame["device_id"].isna().iloc[2]
    assert list(frame["client_s"]) == [8.0, 6.0, 0.0]
    assert list(frame["down_s"]) == [2.0, 2.0, 0.0]
    assert list(frame["up_s"]) == [2.0, 2.0, 0.0]
    assert list(frame["server_s"]) == pytest.approx([0.5, 0.5, 0.2])
    assert list(frame["other_s"]) == pytest.approx([0.0, 0.0, 15.0], abs=1e-9)
    total = frame[["down_s", "client_s", "up_s", "server_s", "other_s"]].sum(axis=1)
    assert list(total) == pytest.approx(list(frame["round_time_s"]))


def test_critical_path_means_and_percentages(tmp_path):
    runs = load_runs(
        [write_cp_run(tmp_path / "a", seed=1), write_cp_run(tmp_path / "b", seed=2)],
        labels=["x", "x"],
    )
    row = critical_path(runs).iloc[0]
    assert row["config"] == "x"
    assert (row["n_runs"], row["n_rounds"], row["n_no_device"]) == (2, 6, 2)
    assert row["critical_profile"] == "slow 4/6"
    assert row["round_time_s"] == pytest.approx(38.2 / 3)
    assert row["client_s"] == pytest.approx(14 / 3)
    assert row["down_s"] == pytest.approx(4 / 3) and row["up_s"] == pytest.approx(4 / 3)
    assert row["server_s"] == pytest.approx(0.4) and row["other_s"] == pytest.approx(5.0)
    pcts = [row[f"{p}_pct"] for p in ("down_s", "client_s", "up_s", "server_s", "other_s")]
    assert sum(pcts) == pytest.approx(100.0)
    assert row["client_s_pct"] == pytest.approx(100 * 14 / 38.2)
    # the same rounds as time_breakdown, which reports the idle wait instead of Other
    assert time_breakdown(runs).iloc[0]["round_time_s"] == pytest.approx(row["round_time_s"])


def test_critical_path_table_other_only_when_nonzero(tmp_path):
    waited = critical_path_table([load_run(write_cp_run(tmp_path / "a", failed_round=False))])
    assert list(waited.columns) == ["label", "Time (s)", "Down", "Client", "Up", "Server"]
    row = waited.iloc[0]
    # round times 12.5 and 10.5 -> 11.5; client 8 and 6 -> 7
    assert row["Time (s)"] == "11.5"
    assert row["Client"] == f"{100 * 7 / 11.5:.1f} %"
    assert row["Server"] == f"{100 * 0.5 / 11.5:.1f} %"
    assert sum(float(row[c].rstrip(" %")) for c in ("Down", "Client", "Up", "Server")) == (
        pytest.approx(100.0, abs=0.2)
    )
    failed = critical_path_table([load_run(write_cp_run(tmp_path / "b"))])
    assert failed.iloc[0]["Other"] == f"{100 * 5 / (38.2 / 3):.1f} %"


def test_table4_comparison(tmp_path):
    runs = load_runs(
        [
            write_cp_run(tmp_path / "a", failed_round=False),
            write_cp_run(tmp_path / "b", seed=2),
        ],
        labels=["ok", "deadline"],
    )
    paper = {"Time (s)": 30, "Down": 5, "Client": 88, "Up": 6, "Server": 1}
    table = table4_comparison(runs, paper, paper_label="Table 4")
    assert list(table.columns) == ["source", "Time (s)", "Down", "Client", "Up", "Server", "Other"]
    assert len(table) == 5  # the paper, then critical path and device means per configuration
    assert table.iloc[0].to_dict() == {
        "source": "Table 4",
        "Time (s)": "30",
        "Down": "1.5 s (5 %)",
        "Client": "26.4 s (88 %)",
        "Up": "1.8 s (6 %)",
        "Server": "0.3 s (1 %)",
        "Other": "0.0 s (0 %)",
    }
    crit = table.iloc[1]
    assert crit["source"] == "fedsim, critical path (slowest device) [ok]"
    assert crit["Client"] == f"7.00 s ({100 * 7 / 11.5:.1f} %)"
    assert crit["Other"] == "0 s (0.0 %)"
    mean = table.iloc[2]
    assert mean["source"] == "fedsim, mean over devices (Other = waiting) [ok]"
    assert mean["Server"] == f"0.50 s ({100 * 0.5 / 11.5:.1f} %)"
    assert table.iloc[3]["Other"] == f"5.00 s ({100 * 5 / (38.2 / 3):.1f} %)"
    alone = table4_comparison([load_run(tmp_path / "a")], paper, per_device_mean=False)
    assert list(alone["source"]) == ["paper", "fedsim, critical path (slowest device)"]


def test_critical_path_of_runs_without_rounds(tmp_path):
    run = write_run(tmp_path / "empty", {"seed": 1, "scenario": {"name": "e"}}, [])
    assert critical_devices([load_run(run)]).empty
    assert critical_path([load_run(run)]).empty
