"""``stop.target_ua``: a run stops at the first evaluated row whose mean UA reaches the target.

Synchronous and asynchronous, inline; with noisy clients the clean devices' mean
(``ua_mean_clean``) decides; the target needs ``evaluation.ua: true``.
"""

import pandas as pd
import pytest
from helpers import REPO

from fedsim.api import run
from fedsim.cli import run_summary
from fedsim.config import load_scenario
from fedsim.errors import InputError

QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
FAST = ["stop.target_accuracy=null", "availability.kind=always_on"]
ASYNC = ["rounds={kind: async, concurrency: 6}", "evaluation.every=3"]


def _target_inside(ua: pd.Series) -> tuple[float, int]:
    """Return a target the reference run reaches after its first row, and the row that does."""
    values = pd.to_numeric(ua, errors="coerce")
    evaluated = values.dropna()
    assert len(evaluated) >= 3, "the reference run needs a few evaluated rows"
    target = float(evaluated.iloc[1:].max())  # above the first evaluation's value
    assert target > float(evaluated.iloc[0])
    hit = int((values >= target).to_numpy().nonzero()[0][0])
    return target, hit


def _stops_at_the_first_hit(tmp_path, sets, column="ua_mean"):  # type: ignore[no-untyped-def]
    ref = run(load_scenario(QUICKSTART, [*FAST, *sets]), tmp_path / "ref")
    assert ref.summary["stopped_by"] == "max_rounds"
    target, hit = _target_inside(ref.rounds[column])

    sc = load_scenario(QUICKSTART, [*FAST, *sets, f"stop.target_ua={target!r}"])
    res = run(sc, tmp_path / "ua")

    assert res.summary["stopped_by"] == "target_ua"
    assert len(res.rounds) == hit + 1  # the first row at or above the target, no later
    pd.testing.assert_frame_equal(res.rounds, ref.rounds.iloc[: hit + 1])  # nothing else moved
    return sc, res


def test_sync_run_stops_at_the_first_row_reaching_the_ua_target(tmp_path):
    sc, res = _stops_at_the_first_hit(tmp_path, ["stop.max_rounds=8"])
    text = run_summary(sc, res.summary, res.path)
    assert "stopped by target_ua" in text and "UA target" in text and "reached" in text


def test_async_run_stops_at_the_first_row_reaching_the_ua_target(tmp_path):
    _stops_at_the_first_hit(tmp_path, [*ASYNC, "stop.max_rounds=24"])


def test_with_noisy_clients_the_clean_devices_mean_decides(tmp_path):
    sets = ["stop.max_rounds=8", "data.noise={fraction: 0.3, std: 3.0}"]
    sc, res = _stops_at_the_first_hit(tmp_path, sets, column="ua_mean_clean")
    assert res.rounds["ua_mean_clean"].notna().all()
    assert res.rounds["ua_mean"].iloc[-1] < sc.stop.target_ua  # all devices' mean: not yet


def test_target_ua_needs_ua_and_a_range(tmp_path):
    with pytest.raises(InputError) as info:
        load_scenario(QUICKSTART, ["stop.target_ua=0.9", "evaluation.ua=false"])
    assert info.value.problems == [
        f"{QUICKSTART}: stop.target_ua: needs evaluation.ua: true (user-model "
        "accuracy is measured only then) (got 0.9)"
    ]
    for bad in ("0", "1.5", ".nan"):
        with pytest.raises(InputError) as info:
            load_scenario(QUICKSTART, [f"stop.target_ua={bad}"])
        (line,) = info.value.problems
        assert line.startswith(f"{QUICKSTART}: stop.target_ua: expected a number in (0, 1]"), line
    assert load_scenario(QUICKSTART, ["stop.target_ua=1.0"]).stop.target_ua == 1.0


def test_reached_reads_any_real_number_and_skips_rows_not_evaluated():
    import numpy as np

    from fedsim.config import StopSpec

    stop = StopSpec(target_accuracy=0.9, target_ua=0.5)
    assert stop.needs_values and not StopSpec().needs_values
    assert stop.reached({"accuracy": None, "ua_mean": None}) is None
    assert stop.reached({"accuracy": np.float32(0.4), "ua_mean": np.float32(0.6)}) == "target_ua"
    assert stop.reached({"accuracy": 0.95, "ua_mean": 0.6}) == "target_accuracy"
    assert stop.reached({"accuracy": float("nan"), "ua_mean": float("nan")}) is None
    # with noisy clients the clean devices' mean decides
    assert stop.reached({"ua_mean": 0.6, "ua_mean_clean": 0.4}) is None
