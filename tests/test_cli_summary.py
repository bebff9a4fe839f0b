"""What ``fedsim run`` prints at the end: the target reached or not, sizes in SI units,
where the results are and how to see them."""

from pathlib import Path

from helpers import REPO

from fedsim.cli import run_summary
from fedsim.config import load_scenario

SUMMARY = {
    "rounds": 30,
    "versions": 30,
    "virtual_time_s": 23.14,
    "final_accuracy": 0.922,
    "best_accuracy": 0.9359,
    "bytes_up": 3_370_526,
    "bytes_down": 4_039_160,
    "energy_j": 727.2,
    "stragglers": 31,
    "dropped": 4,
    "stopped_by": "max_rounds",
}


def test_summary_says_the_target_was_missed_and_points_to_the_report():
    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    text = run_summary(sc, SUMMARY, Path("runs/q-1"))
    assert text.splitlines() == [
        "quickstart: 30 rounds (30 global versions), virtual time 23.1 s, stopped by max_rounds",
        "  final accuracy 0.9220 (best 0.9359); target 0.95 NOT reached",
        "  traffic up 3.37 MB / down 4.04 MB, device energy 727.2 J, stragglers 31, dropped 4",
        "  results: runs/q-1",
        "  report:  fedsim report runs/q-1",
    ]


def test_summary_reached_and_systems_only():
    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    hit = run_summary(sc, {**SUMMARY, "stopped_by": "target_accuracy"}, Path("r"))
    assert "; target 0.95 reached" in hit
    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml", ["stop.target_accuracy=null"])
    none = {**SUMMARY, "final_accuracy": None, "best_accuracy": None}
    assert "  accuracy n/a (learning: false)" in run_summary(sc, none, Path("r")).splitlines()
