"""Bandwidth and availability traces: lookups, selectors, validation, Availability."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsim.config import AvailabilitySpec, TopologySpec, load_scenario
from fedsim.errors import InputError
from fedsim.sim.availability import Availability
from fedsim.sim.population import Population
from fedsim.sim.traces import (
    AvailabilityTrace,
    BandwidthTrace,
    load_availability_trace,
    load_bandwidth_trace,
)

REPO = Path(__file__).resolve().parents[2]
BW_HEADER = "device,time_s,up_mbps,down_mbps\n"
AV_HEADER = "device,on_s,off_s\n"


@pytest.fixture
def population() -> Population:
    """Edges ``home`` (groups of 3 and 2: ids 0-2, 3-4) and ``operator`` (4: ids 5-8)."""
    topology = TopologySpec.model_validate(
        {
            "edges": [
                {
                    "name": "home",
                    "devices": [
                        {"hardware": "rpi4", "link": "wifi", "count": 3},
                        {"hardware": "rpi3b", "link": "wifi", "count": 2},
                    ],
                },
                {
                    "name": "operator",
                    "devices": [{"hardware": "phone_mid", "link": "4g", "count": 4}],
                },
            ]
        }
    )
    return Population.from_topology(topology)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _bw(tmp_path: Path, population: Population, rows: str) -> BandwidthTrace:
    return load_bandwidth_trace(_write(tmp_path, "bw.csv", BW_HEADER + rows), population)


def _av(tmp_path: Path, population: Population, rows: str) -> AvailabilityTrace:
    return load_availability_trace(_write(tmp_path, "av.csv", AV_HEADER + rows), population)


def _problems(call) -> list[str]:
    with pytest.raises(InputError) as info:
        call()
    return info.value.problems


# -- bandwidth lookups ------------------------------------------------------------------


def test_rate_at_before_and_between_change_points(tmp_path, population):
    trace = _bw(tmp_path, population, "7,0,1,10\n7,10,2,20\n7,25.5,3,30\n")
    assert trace.rate_mbps(7, 0.0, up=True) == 1.0
    assert trace.rate_mbps(7, 9.999, up=True) == 1.0  # just before a change
    assert trace.rate_mbps(7, 10.0, up=True) == 2.0  # at a change: the new row
    assert trace.rate_mbps(7, 10.0, up=False) == 20.0
    assert trace.rate_mbps(7, 17.0, up=False) == 20.0  # between changes
    assert trace.rate_mbps(7, 25.5, up=True) == 3.0
    assert trace.rate_mbps(7, 1e9, up=False) == 30.0  # after the last row: the last holds
    assert trace.rate_mbps(7, -1.0, up=True) == 1.0  # before 0: the first row
    assert trace.next_change_s(7, -1.0) == 10.0
    assert trace.next_change_s(7, 0.0) == 10.0
    assert trace.next_change_s(7, 9.0) == 10.0
    assert trace.next_change_s(7, 10.0) == 25.5  # strictly after t
    assert trace.next_change_s(7, 25.5) == math.inf
    assert trace.next_change_s(7, 100.0) == math.inf
    assert trace.num_rows == 3 and trace.num_targets == 1


def test_rows_of_targets_may_interleave(tmp_path, population):
    trace = _bw(tmp_path, population, "1,0,1,1\n2,0,5,5\n1,4,2,2\n2,3,6,6\n")
    assert [trace.rate_mbps(1, t, True) for t in (0, 3.5, 4)] == [1, 1, 2]
    assert [trace.rate_mbps(2, t, True) for t in (0, 3, 4)] == [5, 6, 6]


def test_group_rows_and_device_rows_win(tmp_path, population):
    rows = "home/1,0,1,2\nhome/1,5,3,4\n4,0,9,9\noperator/0,0,7,8\n"
    trace = _bw(tmp_path, population, rows)
    assert [trace.covers(d) for d in range(9)] == [False] * 3 + [True] * 6
    np.testing.assert_array_equal(trace.covers_mask(np.arange(9)), [False] * 3 + [True] * 6)
    assert trace.rate_mbps(3, 6.0, up=True) == 3.0  # home/1 = devices 3, 4
    assert trace.rate_mbps(4, 6.0, up=True) == 9.0  # its own rows win over the group's
    assert trace.next_change_s(4, 0.0) == math.inf  # and only its own rows count
    assert trace.rate_mbps(8, 0.0, up=False) == 8.0  # operator/0 = devices 5-8
    with pytest.raises(KeyError, match="device 0 is not covered"):
        trace.rate_mbps(0, 0.0, up=True)


def test_transfer_follows_the_rate_as_it_changes(tmp_path, population):
    # 1 Mbps for 10 s, then 4 Mbps: 2 MB from t=8 is 2 s at 1 Mbps, then 14 Mbit at 4
    trace = _bw(tmp_path, population, "0,0,1,1\n0,10,4,4\n")
    end = trace.transfer_end_s(0, 8.0, 2_000_000, up=True)
    assert end == pytest.approx(10.0 + 14 / 4)
    assert trace.bytes_between(0, 8.0, end, up=True) == pytest.approx(2_000_000)
    assert trace.bytes_between(0, 8.0, 9.0, up=False) == pytest.approx(125_000)
    assert trace.transfer_end_s(0, 20.0, 500_000, up=False) == pytest.approx(21.0)


# -- availability lookups ---------------------------------------------------------------


def test_intervals_unsorted_touching_and_open_ended(tmp_path, population):
    trace = _av(tmp_path, population, "2,50,inf\n2,0,10\n2,20,30\n2,30,40\n")
    assert [trace.online_at(2, t) for t in (0, 9.9, 10, 15, 20, 35, 40, 45, 50, 1e12)] == [
        True, True, False, False, True, True, False, False, True, True,
    ]  # fmt: skip
    assert trace.offline_after(2, 5.0) == 10.0
    assert trace.offline_after(2, 25.0) == 40.0  # [20, 30) and [30, 40) are one stay
    assert trace.offline_after(2, 60.0) == math.inf
    assert trace.offline_after(2, 15.0) == 15.0  # off line: already gone
    assert trace.num_rows == 3


def test_availability_group_and_device_rows(tmp_path, population):
    trace = _av(tmp_path, population, "operator/0,0,10\n6,5,7\n")
    assert trace.online_at(5, 8.0) and not trace.online_at(6, 8.0)
    assert trace.online_at(6, 5.0) and not trace.online_at(6, 0.0)
    assert not trace.covers(0)


# -- malformed files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("1,0,abc,1\n", "bw.csv: line 2, column up_mbps: expected a positive finite"),
        ("1,0,1,0\n", "bw.csv: line 2, column down_mbps: expected a positive finite"),
        ("1,0,-2,1\n", "bw.csv: line 2, column up_mbps: expected a positive finite"),
        ("1,0,inf,1\n", "bw.csv: line 2, column up_mbps: expected a positive finite"),
        ("1,0,nan,1\n", "bw.csv: line 2, column up_mbps: expected a positive finite"),
        ("1,nan,1,1\n", "bw.csv: line 2, column time_s: expected a finite number"),
        ("1,-1,1,1\n", "bw.csv: line 2, column time_s: expected a finite number"),
        ("1,5,1,1\n", "bw.csv: line 2, column time_s: expected 0 in the first row of device 1"),
        (
            "home/1,0,1,1\nhome/1,3,1,1\nhome/1,3,1,1\n",
            "bw.csv: line 4, column time_s: expected a time after 3, the time of the previous "
            "row of home/1 (line 3)",
        ),
        ("9,0,1,1\n", "bw.csv: line 2, column device: expected a device id in 0..8 (got '9')"),
        ("-1,0,1,1\n", "bw.csv: line 2, column device: expected a device id (e.g. 17) or"),
        ("cloud/0,0,1,1\n", "bw.csv: line 2, column device: expected an edge name before '/'"),
        ("home/2,0,1,1\n", "bw.csv: line 2, column device: expected a group index in 0..1"),
        ("home/x,0,1,1\n", "bw.csv: line 2, column device: expected a group index in 0..1"),
        ("1,0,1\n", "bw.csv: line 2: expected 4 cells (device,time_s,up_mbps,down_mbps) (got 3)"),
        ("", "bw.csv: line 2: expected at least one row after the header"),
    ],
)
def test_bad_bandwidth_rows(tmp_path, population, rows, expected):
    problems = _problems(lambda: _bw(tmp_path, population, rows))
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(tmp_path / expected)), problems


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("1,x,5\n", "av.csv: line 2, column on_s: expected a finite number of seconds >= 0"),
        ("1,-1,5\n", "av.csv: line 2, column on_s: expected a finite number of seconds >= 0"),
        ("1,inf,inf\n", "av.csv: line 2, column on_s: expected a finite number"),
        ("1,5,5\n", "av.csv: line 2, column off_s: expected a number of seconds greater than"),
        ("1,5,nan\n", "av.csv: line 2, column off_s: expected a number of seconds greater than"),
        (
            "1,0,10\n1,20,30\n1,5,8\n",
            "av.csv: line 4, columns on_s,off_s: expected an interval not overlapping [0, 10) "
            "of device 1 (line 2) (got [5, 8))",
        ),
        (
            "operator/0,0,inf\noperator/0,100,200\n",
            "av.csv: line 3, columns on_s,off_s: expected an interval not overlapping [0, inf) "
            "of operator/0 (line 2)",
        ),
        ("nope/0,0,1\n", "av.csv: line 2, column device: expected an edge name"),
    ],
)
def test_bad_availability_rows(tmp_path, population, rows, expected):
    problems = _problems(lambda: _av(tmp_path, population, rows))
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(tmp_path / expected)), problems


def test_every_problem_is_reported_at_once(tmp_path, population):
    rows = "1,0,1,1\nx,0,1,1\n1,0,1,1\n2,0,a,b\n\n3,1,1,1\n"
    problems = _problems(lambda: _bw(tmp_path, population, rows))
    where = [p.split(": ")[1] for p in problems]
    assert where == [
        "line 3, column device",
        "line 4, column time_s",
        "line 5, column up_mbps",
        "line 5, column down_mbps",
        "line 7, column time_s",  # the blank line 6 is skipped but counted
    ]


def test_problem_list_is_capped(tmp_path, population):
    problems = _problems(lambda: _bw(tmp_path, population, "99,0,1,1\n" * 150))
    assert len(problems) == 101
    assert problems[-1] == f"{tmp_path / 'bw.csv'}: (file): 50 more problems not listed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "line 1: expected the header 'device,time_s,up_mbps,down_mbps' (the file is empty)"),
        ("\n\n", "line 1: expected the header 'device,time_s,up_mbps,down_mbps' (the file is"),
        ("device,time,up,down\n1,0,1,1\n", "line 1: expected the header 'device,time_s,up_mbps"),
        ("1,0,1,1\n", "line 1: expected the header 'device,time_s,up_mbps,down_mbps' (got '1,0"),
    ],
)
def test_bad_header(tmp_path, population, text, expected):
    path = _write(tmp_path, "bw.csv", text)
    problems = _problems(lambda: load_bandwidth_trace(path, population))
    assert problems == [problems[0]] and problems[0].startswith(f"{path}: {expected}")


def test_header_tolerates_bom_spaces_and_crlf(tmp_path, population):
    path = tmp_path / "bw.csv"
    path.write_bytes(b"\xef\xbb\xbfdevice, time_s ,up_mbps,down_mbps\r\n 1 , 0 ,2,3\r\n")
    assert load_bandwidth_trace(path, population).rate_mbps(1, 0.0, up=False) == 3.0


def test_missing_file(tmp_path, population):
    path = tmp_path / "nope.csv"
    assert _problems(lambda: load_availability_trace(path, population)) == [
        f"{path}: file not found"
    ]


def test_wrong_format_for_the_loader(tmp_path, population):
    path = _write(tmp_path, "bw.csv", BW_HEADER + "1,0,1,1\n")
    problems = _problems(lambda: load_availability_trace(path, population))
    assert problems == [
        f"{path}: line 1: expected the header 'device,on_s,off_s' "
        "(got 'device,time_s,up_mbps,down_mbps')"
    ]


# -- Availability with a trace -----------------------------------------------------------


def test_availability_follows_trace_for_covered_devices_only(tmp_path, population):
    spec = AvailabilitySpec(kind="on_off", mean_on_s=30.0, mean_off_s=10.0)
    trace = _av(tmp_path, population, "home/1,0,12\nhome/1,15,inf\n6,5,50\n")
    plain = Availability(spec, seed=3, num_devices=9)
    traced = Availability(spec, seed=3, num_devices=9, trace=trace)
    assert not traced.always_on and traced.p_on == plain.p_on and traced.trace is trace
    ids = np.arange(9)
    covered = {3, 4, 6}
    for t in (0.0, 4.0, 12.0, 13.0, 16.0, 49.0, 50.0, 77.7, 400.0):
        mask = traced.online_mask(ids, t)
        plain_mask = plain.online_mask(ids, t)
        for d in range(9):
            want = trace.online_at(d, t) if d in covered else bool(plain_mask[d])
            assert mask[d] == want
            assert traced.online_at(d, t) == want
            if want:
                expected = trace.offline_after(d, t) if d in covered else plain.offline_after(d, t)
                assert traced.offline_after(d, t) == expected
    # a fresh Availability without a trace gives the same answers for uncovered devices
    fresh = Availability(spec, seed=3, num_devices=9)
    uncovered = np.array([0, 1, 2, 5, 7, 8])
    np.testing.assert_array_equal(
        traced.online_mask(uncovered, 33.0), fresh.online_mask(uncovered, 33.0)
    )


def test_always_on_with_trace(tmp_path, population):
    trace = _av(tmp_path, population, "2,0,10\n2,20,inf\n")
    availability = Availability(AvailabilitySpec(), seed=1, num_devices=9, trace=trace)
    assert not availability.always_on  # selection must consult the mask
    assert availability.p_on == 1.0
    np.testing.assert_array_equal(
        availability.online_mask(np.arange(9), 15.0), [True, True, False] + [True] * 6
    )
    assert availability.offline_after(2, 0.0) == 10.0
    assert availability.offline_after(3, 0.0) == math.inf
    assert availability.online_mask(np.array([], dtype=np.int64), 0.0).shape == (0,)
    assert Availability(AvailabilitySpec(), seed=1).always_on


# -- the shipped examples -----------------------------------------------------------------


def test_shipped_examples_load_against_the_quickstart():
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    population = Population.from_topology(scenario.topology)
    folder = REPO / "scenarios" / "traces"
    bandwidth = load_bandwidth_trace(folder / "quickstart_bandwidth.csv", population)
    availability = load_availability_trace(folder / "quickstart_availability.csv", population)
    assert bandwidth.covers(15) and bandwidth.covers(25) and not bandwidth.covers(0)
    assert bandwidth.rate_mbps(15, 12.0, up=True) < bandwidth.rate_mbps(15, 5.0, up=True)
    assert bandwidth.rate_mbps(27, 0.0, up=True) == 1.2  # its own rows beat operator/1's
    assert availability.covers(10) and availability.covers(12) and not availability.covers(29)
    assert not availability.online_at(10, 13.0) and availability.online_at(12, 13.0)


def test_examples_are_what_the_script_generates(tmp_path):
    script = REPO / "scripts" / "make_example_traces.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    for name in ("quickstart_bandwidth.csv", "quickstart_availability.csv"):
        shipped = (REPO / "scenarios" / "traces" / name).read_text()
        assert (tmp_path / name).read_text() == shipped
