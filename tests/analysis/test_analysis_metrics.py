import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.analysis import (
    NOT_REACHED,
    load_run,
    load_runs,
    mean_ci,
    rounds_to_target,
    target_summary,
    time_to_target,
)


def test_time_to_target_hand_computed(hand_run):
    run = load_run(hand_run)
    # accuracy per round: 0.50, (not evaluated), 0.82, 0.79, 0.91; rounds end at 10, 25, 32.5,
    # 50, 61 virtual seconds
    assert time_to_target(run, "accuracy", 0.5) == 10.0
    assert time_to_target(run, "accuracy", 0.8) == 32.5
    assert rounds_to_target(run, "accuracy", 0.8) == 3
    assert time_to_target(run, "accuracy", 0.82) == 32.5  # inclusive
    assert time_to_target(run, "accuracy", 0.85) == 61.0
    assert rounds_to_target(run, "accuracy", 0.85) == 5
    assert time_to_target(run, "accuracy", 0.95) is None
    assert rounds_to_target(run, "accuracy", 0.95) is None
    # user-model accuracy: 0.55, -, 0.78, 0.86, 0.88
    assert time_to_target(run, "ua_mean", 0.8) == 50.0
    assert rounds_to_target(run, "ua_mean", 0.8) == 4
    # works on a bare frame too
    assert time_to_target(run.rounds, "accuracy", 0.9) == 61.0


def test_time_to_target_unknown_metric(hand_run):
    with pytest.raises(KeyError, match="no column"):
        time_to_target(load_run(hand_run), "acc", 0.5)


def test_target_summary_over_seeds(tmp_path, make_hand_run):
    # three seeds of one configuration, shifted in time by 0, 3 and 6 s
    paths = [make_hand_run(tmp_path / f"s{i}", seed=i, shift_s=3.0 * i) for i in range(3)]
    runs = load_runs(paths, labels=["cfg"] * 3)
    summ = target_summary(runs, "accuracy", 0.8)
    row = summ.iloc[0]
    assert row["n_runs"] == 3 and row["n_reached"] == 3 and row["status"] == "reached"
    assert row["time_s_mean"] == pytest.approx(35.5)  # 32.5, 35.5, 38.5
    # sd = 3, sem = sqrt(3), t(0.975, 2) = 4.302652729749464
    half = 4.302652729749464 * 3 / math.sqrt(3)
    assert row["time_s_ci_low"] == pytest.approx(35.5 - half)
    assert row["time_s_ci_high"] == pytest.approx(35.5 + half)
    assert row["rounds_mean"] == 3 and row["rounds_ci_low"] == 3
    none = target_summary(runs, "accuracy", 0.99).iloc[0]
    assert none["status"] == NOT_REACHED and none["n_reached"] == 0


@pytest.mark.parametrize(
    ("q", "df", "expected"),
    [
        (0.975, 1, 12.706204736174707),
        (0.975, 4, 2.7764451051977934),
        (0.975, 30, 2.0422724563012378),
        (0.95, 10, 1.8124611228107335),
        (0.025, 5, -2.570581835636314),
    ],
)
def test_interval_uses_student_t_quantiles_from_tables(q, df, expected):
    # df + 1 values of sample std 1 around 0: the half width is t(q, df) / sqrt(df + 1)
    n = df + 1
    values = np.array([-1.0, 1.0] * (n // 2) + [0.0] * (n % 2))
    values = values / np.std(values, ddof=1)
    ci = mean_ci(values.tolist(), 2 * q - 1 if q > 0.5 else 1 - 2 * q)
    assert ci.half_width == pytest.approx(abs(expected) / np.sqrt(n), rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), st.sampled_from([0.8, 0.9, 0.95, 0.99])
)
def test_mean_ci_contains_mean_and_is_ordered(values, confidence):
    ci = mean_ci(values, confidence)
    assert ci.n == len(values)
    assert ci.mean == pytest.approx(float(np.mean(values)), abs=1e-6)
    assert ci.low <= ci.mean + 1e-9 and ci.mean <= ci.high + 1e-9
    if len(values) == 1:
        assert ci.low == ci.high == ci.mean


def test_mean_ci_wider_with_more_confidence():
    vals = [1.0, 2.0, 4.0, 7.0]
    assert mean_ci(vals, 0.99).half_width > mean_ci(vals, 0.9).half_width > 0
    assert math.isnan(mean_ci([]).mean)
