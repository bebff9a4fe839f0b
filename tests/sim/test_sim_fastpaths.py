"""The driver's fast paths against straightforward reference implementations.

Each reference is the earlier, simple version of the same model (a SimPy timeout per
phase raced with ``any_of``; a device timeline kept whole; one ``stream`` per key). The
keyed streams and availability must give the same values bit for bit; the round, whose
transfers now run as flows on (here unshared) resources, the same to float rounding.
"""

import math

import numpy as np
import pytest
import simpy

from fedsim.config import AvailabilitySpec
from fedsim.seeding import Purpose, stream
from fedsim.sim.availability import Availability
from fedsim.sim.costs import Transfer
from fedsim.sim.keyed import KeyedStreams
from fedsim.sim.sync_round import DeviceOutcome, DevicePlan, Status, run_round

# -- reference: one SimPy timeout per phase, each raced against close and drop-out ---------


def _transfer(duration_s, rtt_s, num_bytes):
    """A transfer of ``duration_s`` alone: a round trip, then the bytes at a fixed rate."""
    return Transfer(duration_s, rtt_s, num_bytes, num_bytes * 8 / (duration_s - rtt_s) / 1e6)


def _bytes_done_by(t, elapsed_s):
    if elapsed_s >= t.duration_s:
        return t.num_bytes
    if elapsed_s <= t.rtt_s:
        return 0
    return int(t.num_bytes * (elapsed_s - t.rtt_s) / (t.duration_s - t.rtt_s))


class _RefCollector:
    def __init__(self, env, wanted):
        self.env, self.wanted = env, wanted
        self.reports, self.enough, self.closed = [], env.event(), env.event()

    def report(self, device_id):
        self.reports.append((self.env.now, device_id))
        if len(self.reports) == self.wanted and not self.enough.triggered:
            self.enough.succeed()


def _ref_device(env, plan, col, out):
    start = env.now
    spent = {"fetch": 0.0, "down": 0.0, "compute": 0.0, "up": 0.0}
    phases = (
        ("fetch", plan.fetch_s),
        ("down", plan.down.duration_s),
        ("compute", plan.compute_s),
        ("up", plan.up.duration_s),
    )
    drop = env.timeout(plan.offline_at_s - start) if math.isfinite(plan.offline_at_s) else None
    status, finished = Status.COMPLETED, set()
    for name, duration in phases:
        began = env.now
        waits = [env.timeout(duration), col.closed] + ([drop] if drop is not None else [])
        yield env.any_of(waits)
        spent[name] = env.now - began
        if env.now < began + duration:
            status = Status.DROPPED if drop is not None and drop.processed else Status.STRAGGLER
            break
        finished.add(name)
    if status is Status.COMPLETED:
        col.report(plan.device_id)
    out[plan.device_id] = DeviceOutcome(
        plan, status, start, env.now, spent["fetch"] + spent["down"], spent["down"],
        spent["compute"], spent["up"], 0.0,
        plan.down.num_bytes if "down" in finished else _bytes_done_by(plan.down, spent["down"]),
        plan.up.num_bytes if "up" in finished else _bytes_done_by(plan.up, spent["up"]),
    )  # fmt: skip


def _ref_round(env, plans, wanted, deadline_s):
    start = env.now
    col = _RefCollector(env, wanted)
    out = {}
    procs = [env.process(_ref_device(env, p, col, out)) for p in plans]
    waits = [env.all_of(procs), col.enough]
    if deadline_s is not None:
        waits.append(env.timeout(deadline_s))
    yield env.any_of(waits)
    yield env.timeout(0)
    close = env.now
    at_deadline = deadline_s is not None and close >= start + deadline_s
    col.closed.succeed()
    yield env.all_of(procs)
    ordered = sorted(col.reports)
    kept_ids = {d for _, d in ordered[:wanted]}
    outcomes = [out[p.device_id] for p in plans]
    for o in outcomes:
        if o.status is Status.STRAGGLER and not at_deadline:
            o.status = Status.DISCARDED
        elif o.status is Status.COMPLETED:
            o.wait_s = close - o.end_s
            if o.plan.device_id not in kept_ids:
                o.status = Status.DISCARDED
    by_id = {o.plan.device_id: o for o in outcomes}
    return close, outcomes, [by_id[d] for _, d in ordered[:wanted]]


def _play(round_fn, plans, wanted, deadline_s, start_s):
    env = simpy.Environment()
    if start_s > 0:
        env.run(until=env.timeout(start_s))
    proc = env.process(round_fn(env, plans, wanted, deadline_s))
    env.run(until=proc)
    return env, proc.value


def _as_tuple(o: DeviceOutcome) -> tuple:
    return (
        o.plan.device_id, o.status, o.start_s, o.end_s, o.download_s, o.access_down_s,
        o.compute_s, o.upload_s, o.wait_s, o.bytes_down, o.bytes_up,
    )  # fmt: skip


def _same(a: list, b: list) -> None:
    """Outcomes equal: ids, statuses exactly; times to 1e-9 s; bytes to one byte."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:2] == y[:2]
        assert x[2:9] == pytest.approx(y[2:9], abs=1e-9)
        assert abs(x[9] - y[9]) <= 1 and abs(x[10] - y[10]) <= 1


def _random_plans(rng: np.random.Generator, start_s: float, grid: float | None) -> list:
    """Plans on a coarse time grid (many exact ties) or with continuous times."""

    def t(low: float, high: float) -> float:
        if grid is None:
            return float(rng.uniform(low, high))
        return float(rng.integers(int(low / grid), int(high / grid) + 1) * grid)

    plans = []
    for d in range(int(rng.integers(1, 25))):
        down = _transfer(max(t(0.25, 1.5), 0.25), 0.05, 1000)
        up = _transfer(max(t(0.25, 1.5), 0.25), 0.05, 1000)
        fetch = 0.0 if rng.random() < 0.5 else t(0.0, 0.5)
        offline = math.inf if rng.random() < 0.4 else start_s + max(t(0.0, 5.0), 0.25)
        plans.append(DevicePlan(d, 0, fetch, down, t(0.0, 2.0), up, offline))
    return plans


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("start_s", [0.0, 0.1, 7.3])
def test_flows_match_per_phase_reference(seed, start_s):
    # continuous times: a transfer's end is rtt + bits / rate, so grid-aligned ties of the
    # reference are no longer exact ties here (their order follows float rounding)
    grid = None
    rng = np.random.default_rng(int(start_s * 10) + 100 * seed)
    for _ in range(60):
        plans = _random_plans(rng, start_s, grid)
        wanted = int(rng.integers(1, len(plans) + 1))
        deadline = None if rng.random() < 0.3 else float(rng.choice([1.0, 1.5, 2.25, 3.0, 4.0]))
        env_a, (close, outcomes, kept) = _play(_ref_round, plans, wanted, deadline, start_s)
        env_b, timing = _play(run_round, plans, wanted, deadline, start_s)
        assert timing.close_s == pytest.approx(close, abs=1e-9)
        _same([_as_tuple(o) for o in timing.outcomes], [_as_tuple(o) for o in outcomes])
        assert [o.plan.device_id for o in timing.kept] == [o.plan.device_id for o in kept]
        assert env_b.now == pytest.approx(env_a.now, abs=1e-9)


# -- reference: a device timeline kept whole, extended 32 switches at a time --------------


class _RefAvailability:
    def __init__(self, spec, seed):
        self.spec, self.seed, self.timelines = spec, seed, {}

    def _switches(self, d, t):
        if d not in self.timelines:
            rng = stream(self.seed, Purpose.AVAILABILITY, d)
            p_on = self.spec.mean_on_s / (self.spec.mean_on_s + self.spec.mean_off_s)
            self.timelines[d] = (rng, bool(rng.random() < p_on), [])
        rng, online_first, switches = self.timelines[d]
        while not switches or switches[-1] <= t:
            online = online_first == (len(switches) % 2 == 0)
            means = np.where(
                (np.arange(32) % 2 == 0) == online, self.spec.mean_on_s, self.spec.mean_off_s
            )
            start = switches[-1] if switches else 0.0
            switches.extend((start + np.cumsum(rng.exponential(1.0, 32) * means)).tolist())
        return online_first, switches

    def online_at(self, d, t):
        online_first, switches = self._switches(d, t)
        return online_first == (int(np.searchsorted(switches, t, side="right")) % 2 == 0)

    def offline_after(self, d, t):
        _, switches = self._switches(d, t)
        return float(switches[int(np.searchsorted(switches, t, side="right"))])


@pytest.mark.parametrize("means", [(2.0, 1.0), (60.0, 20.0), (0.3, 5.0)])
def test_availability_matches_whole_timeline_reference(means):
    spec = AvailabilitySpec(kind="on_off", mean_on_s=means[0], mean_off_s=means[1])
    ref = _RefAvailability(spec, 7)
    tiny_cache = Availability(spec, 7, cache_size=4)  # evicts all the time; arrays grow
    sized = Availability(spec, 7, num_devices=40)
    rng = np.random.default_rng(1)
    # forward in time (cursors advance past many blocks), then anywhere (replays)
    times = np.concatenate([np.sort(rng.uniform(0, 600, 1500)), rng.uniform(0, 600, 300)])
    for t in times.tolist():
        d = int(rng.integers(0, 40))
        expected = ref.online_at(d, t)
        assert tiny_cache.online_at(d, t) == expected
        assert sized.online_at(d, t) == expected
        if expected:
            off = ref.offline_after(d, t)
            assert tiny_cache.offline_after(d, t) == off
            assert sized.offline_after(d, t) == off
    for d in range(5):  # exactly at switch times
        _, switches = ref._switches(d, 600.0)
        for s in switches[:80]:
            assert sized.online_at(d, s) == ref.online_at(d, s)
    ids = rng.permutation(40)
    for t in (0.0, 3.5, 250.0, 10.0):
        expected_mask = [ref.online_at(int(d), t) for d in ids]
        assert Availability(spec, 7).online_mask(ids, t).tolist() == expected_mask
        assert sized.online_mask(ids, t).tolist() == expected_mask


def test_availability_memory_is_bounded():
    spec = AvailabilitySpec(kind="on_off", mean_on_s=1.0, mean_off_s=1.0)
    avail = Availability(spec, 3, num_devices=10_000, cache_size=100)
    avail.online_mask(np.arange(10_000), 5.0)
    assert len(avail._cache) == 100
    assert avail._block_index.shape == (10_000,)  # a fixed-size array, no growth


# -- reference: one SeedSequence and PCG64 per key ------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2**32 + 5, 2**64 + 3, 10**40])
@pytest.mark.parametrize(
    ("head", "tail"), [((), (0,)), ((), (123,)), ((3,), ()), ((2**40,), (1, 2**33))]
)
def test_keyed_streams_match_stream(seed, head, tail):
    streams = KeyedStreams(seed, Purpose.DEVICE_ROUND, head, tail)
    assert streams.exact
    ids = np.array([0, 1, 2, 999_999, 2**32 - 1], dtype=np.int64)
    states = streams.states(ids)
    assert states is not None
    for d, state in zip(ids.tolist(), states, strict=True):
        expected = stream(seed, Purpose.DEVICE_ROUND, *head, d, *tail).standard_normal(4)
        assert streams.generator(d, state).standard_normal(4).tolist() == expected.tolist()
    assert streams.states(np.array([2**32])) is None  # beyond one word: plain streams
    fallback = streams.generator(5, None).standard_normal(2)
    assert (
        fallback.tolist()
        == stream(seed, Purpose.DEVICE_ROUND, *head, 5, *tail).standard_normal(2).tolist()
    )
