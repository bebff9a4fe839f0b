"""Asynchronous runs in the analysis library: updates.csv, the fates table, the report."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedsim.analysis import load, load_run, write_report
from fedsim.analysis.load import UPDATE_COLUMNS
from fedsim.analysis.report import runs_table
from fedsim.analysis.report_async import row_noun
from fedsim.analysis.updates import plot_staleness, update_fates_table

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "async"
# 30 virtual seconds each (about 2 s of wall time together); a 6 s deadline gives time-outs
RUNS = {
    "fedbuff": ["stop.max_virtual_s=30", "rounds.deadline_s=6"],
    "fedasync": ["stop.max_virtual_s=30"],
    "sync_deadline": ["stop.max_virtual_s=30"],
}
SYNC_HEADINGS = [
    "Scenario",
    "Key figures",
    "Learning curves",
    "Cost",
    "Where round time goes",
    "Stragglers: device timelines",
    "All runs",
]  # no Offloading section: every device of these runs trained locally


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three small real runs: FedBuff, FedAsync and synchronous FedAvg."""
    from fedsim.api import run
    from fedsim.config import load_scenario

    root = tmp_path_factory.mktemp("async") / "runs"
    for name, sets in RUNS.items():
        run(load_scenario(SCENARIOS / f"{name}.yaml", sets), root / name)
    return root


def _headings(text: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", text)


def test_load_run_reads_updates(runs_dir):
    from fedsim.sim.rows import UPDATE_COLUMNS as SIM_COLUMNS

    assert list(SIM_COLUMNS) == UPDATE_COLUMNS
    run = load_run(runs_dir / "fedbuff")
    raw = pd.read_csv(runs_dir / "fedbuff" / "updates.csv")
    assert run.is_async
    assert list(run.updates.columns) == UPDATE_COLUMNS
    assert len(run.updates) == len(raw) > 0
    assert run.updates["fate"].tolist() == raw["fate"].tolist()
    assert {"applied", "timed_out"} <= set(run.updates["fate"])
    assert pd.api.types.is_numeric_dtype(run.updates["staleness"])
    # FedBuff: a version per buffer of 5 applied updates
    assert (run.updates["fate"] == "applied").sum() == 5 * len(run.rounds)
    sync = load_run(runs_dir / "sync_deadline")
    assert not sync.is_async
    assert sync.updates.empty and list(sync.updates.columns) == UPDATE_COLUMNS


def test_async_run_without_updates_file(runs_dir, tmp_path):
    copy = Path(shutil.copytree(runs_dir / "fedasync", tmp_path / "fedasync"))
    (copy / "updates.csv").unlink()
    run = load_run(copy)
    assert run.is_async  # from run.json's rounds.kind
    assert run.updates.empty and list(run.updates.columns) == UPDATE_COLUMNS


def test_fates_table_of_real_runs(runs_dir):
    rs = load(runs_dir)
    table = update_fates_table(rs)
    assert set(table["configuration"]) == {"async_fedbuff", "async_fedasync"}  # no sync run
    for name in ("fedasync", "fedbuff"):
        run = load_run(runs_dir / name)
        row = table[table["configuration"] == run.label].iloc[0]
        counts = run.updates["fate"].value_counts()
        assert row["route"] == "device → cloud"
        assert row["updates"] == len(run.updates)
        for fate, n in counts.items():
            assert row[fate] == n
        applied = run.updates[run.updates["fate"] == "applied"]
        assert row["median staleness"] == applied["staleness"].median()
        assert row["max staleness"] == applied["staleness"].max()
        assert row["mean weight"] == pytest.approx(applied["weight"].mean())
    # FedAsync: every applied update is a version
    fedasync = load_run(runs_dir / "fedasync")
    assert (fedasync.updates["fate"] == "applied").sum() == len(fedasync.rounds)


def _write_updates(run_dir: Path, staleness: list[int], fates: list[str]) -> None:
    rows = [
        {
            "dispatch": i,
            "source": "device",
            "device_id": i % 3,
            "edge_id": "e0",
            "server": "cloud",
            "base_version": 0,
            "dispatch_s": 0.0,
            "arrival_s": 1.0,
            "staleness": s if f in ("applied", "stale") else None,
            "weight": 0.5 if f == "applied" else None,
            "fate": f,
            "version": 1 if f == "applied" else None,
            "applied_s": 1.0 if f == "applied" else None,
        }  # fmt: skip
        for i, (s, f) in enumerate(zip(staleness, fates, strict=True))
    ]
    pd.DataFrame(rows, columns=UPDATE_COLUMNS).to_csv(run_dir / "updates.csv", index=False)


def test_fates_table_means_counts_over_seeds_and_pools_staleness(tmp_path, make_hand_run):
    a = make_hand_run(tmp_path / "runs" / "a", seed=1)
    b = make_hand_run(tmp_path / "runs" / "b", seed=2)
    _write_updates(a, [0, 1, 2, 9], ["applied", "applied", "applied", "stale"])
    fates_b = ["applied", "dropped", "dropped", "timed_out", "in_flight", "oom"]
    _write_updates(b, [4, 0, 0, 0, 0, 0], fates_b)
    table = update_fates_table(load(tmp_path / "runs"))
    assert len(table) == 1
    row = table.iloc[0]
    assert row["runs"] == 2 and row["updates"] == 5  # (4 + 6) / 2
    assert row["applied"] == 2 and row["stale"] == 0.5 and row["dropped"] == 1
    assert row["timed_out"] == 0.5 and row["oom"] == 0.5 and row["in_flight"] == 0.5
    assert "queued" not in table.columns and "buffered" not in table.columns
    assert row["applied (%)"] == 40
    assert row["median staleness"] == 1.5  # of 0, 1, 2, 4 pooled
    assert row["max staleness"] == 4 and row["mean weight"] == 0.5
    assert len(plot_staleness(load(tmp_path / "runs")).axes) == 1


def test_report_of_an_async_run(runs_dir, tmp_path):
    text = write_report(runs_dir / "fedbuff", tmp_path / "r.html").read_text(encoding="utf-8")
    headings = _headings(text)
    assert "Asynchronous updates" in headings
    assert "Where round time goes" not in headings
    assert "Stragglers: device timelines" not in headings
    assert "versions run" in text and "rounds run" not in text
    assert "against virtual time (left) and version (right)" in text
    assert 'alt="staleness of updates"' in text and 'alt="time breakdown"' not in text
    assert not any(h.startswith("Rounds and time") for h in headings)
    assert ">timed_out<" in text and ">applied<" in text
    assert ">nan<" not in text.lower()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_round_asked_of_an_async_run_gets_a_note(runs_dir, tmp_path):
    text = write_report(runs_dir / "fedasync", tmp_path / "r.html", gantt_round=3).read_text()
    assert "No timeline of round 3: asynchronous runs have no rounds" in text
    assert 'alt="device timeline' not in text


def test_report_of_a_sync_run_keeps_its_sections(runs_dir, tmp_path):
    text = write_report(runs_dir / "sync_deadline", tmp_path / "r.html").read_text("utf-8")
    headings = _headings(text)
    assert [h for h in headings if not h.startswith("Rounds and time")] == SYNC_HEADINGS
    assert any(h.startswith("Rounds and time to accuracy") for h in headings)
    assert "rounds run" in text and "version" not in text.split("<h2>Key figures")[1]
    assert "Asynchronous" not in text and "Synchronous runs only" not in text
    assert "rounds" in runs_table(load(runs_dir / "sync_deadline")).columns


def test_report_of_mixed_sync_and_async_runs(runs_dir, tmp_path):
    text = write_report(runs_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    headings = _headings(text)
    for heading in (
        "Asynchronous updates",
        "Where round time goes",
        "Stragglers: device timelines",
    ):
        assert heading in headings
    assert text.count("Synchronous runs only") == 2  # time breakdown and timelines
    timelines = re.findall(r'alt="device timeline ([^"]*)"', text)
    assert timelines and all(t.startswith("sync_deadline") for t in timelines)
    assert "rounds / versions run" in text
    assert "Rounds / versions and time to" in text
    rs = load(runs_dir)
    assert row_noun(rs.runs) == "rounds / versions"
    assert row_noun([r for r in rs.runs if r.is_async], plural=False) == "version"
    assert list(runs_table(rs).columns).count("rounds / versions") == 1


def test_report_of_a_sweep_of_async_runs_per_config(runs_dir, tmp_path):
    # two seeds of one async configuration: the fates table has one row, runs = 2
    root = tmp_path / "seeds"
    for seed in (1, 2):
        dst = Path(shutil.copytree(runs_dir / "fedasync", root / f"s{seed}"))
        meta = json.loads((dst / "run.json").read_text())
        meta["seed"] = meta["scenario"]["seed"] = seed
        (dst / "run.json").write_text(json.dumps(meta))
    table = update_fates_table(load(root))
    assert len(table) == 1 and table["runs"].iloc[0] == 2
    assert table["updates"].iloc[0] == len(load_run(root / "s1").updates)  # mean per run


def test_analysis_imports_no_simulator():
    code = (
        "import sys, fedsim.analysis, fedsim.analysis.report, fedsim.analysis.updates; "
        "print(sorted(m for m in ('torch', 'ray', 'simpy', 'fedsim.sim') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
