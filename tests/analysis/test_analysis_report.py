import re

from analysis import write_report
from analysis.demo import make_demo_run


def test_report_of_a_sweep_is_self_contained(demo_sweep, tmp_path):
    out = write_report(demo_sweep, tmp_path / "r" / "report.html")
    assert out == tmp_path / "r" / "report.html"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # nothing fetched from anywhere: every src is an inline data URI, no stylesheets/scripts
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in text and "<script" not in text
    for heading in (
        "Scenario",
        "Key figures",
        "Learning curves",
        "Cost",
        "Where round time goes",
        "User-model accuracy across devices",
        "Stragglers: device timelines",
        "All runs",
    ):
        assert f">{heading}<" in text
    assert "rounds.participants" in text
    assert ">nan<" not in text.lower()
    assert not list(tmp_path.glob("r/.*tmp*"))


def test_report_default_location_and_not_reached(tmp_path):
    run_dir = make_demo_run(tmp_path / "run", rounds=4)
    out = write_report(run_dir, target=0.999)
    assert out == run_dir / "report.html"
    text = out.read_text(encoding="utf-8")
    assert "not reached" in text
    assert "accuracy ≥ 0.999" in text


def test_report_of_run_without_evaluation(tmp_path, make_hand_run):
    run_dir = make_hand_run(tmp_path / "run")
    import pandas as pd

    rounds = pd.read_csv(run_dir / "rounds.csv")
    rounds[["accuracy", "ua_mean", "loss"]] = float("nan")
    rounds.to_csv(run_dir / "rounds.csv", index=False)
    (run_dir / "device_ua.csv").write_text("version,device_id,accuracy\n")
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "no run evaluated" not in text  # no target: the target sections are left out
    assert "User-model accuracy across devices" not in text
