"""Max-min fair sharing on the SimPy clock: hand-computed times, a brute-force reference."""

import math

import numpy as np
import pytest
import simpy

from fedsim.sim.sharing import SharedResource


def _play(capacity, flows, stops=()):
    """Start ``flows`` = [(start_s, work, cap, owner)], stop ``stops`` = [(at_s, owner)]."""
    env = simpy.Environment()
    res = SharedResource(env, capacity)
    started = {}

    def starter(at, work, cap, owner):
        yield env.timeout(at)
        started[owner] = res.start(work, cap, owner)

    def stopper(at, owner):
        yield env.timeout(at)
        started[owner].stop_done = res.stop(started[owner])

    for f in flows:
        env.process(starter(*f))
    for s in stops:
        env.process(stopper(*s))
    env.run()
    return started


def test_three_staggered_capped_flows_hand_computed():
    # capacity 10; A cap 6 at 0 (work 12); B cap 2 at 1 (work 4); C cap 8 at 1.5 (work 10)
    # 0-1 A alone at 6; 1-1.5 A 6, B 2 (caps fit); 1.5: caps 16 > 10, B keeps 2, A and C
    # share 8 (4 each); A ends 2.25; then C 8, B 2; B ends 3.0; C alone ends 3.125
    flows = _play(10.0, [(0.0, 12.0, 6.0, 0), (1.0, 4.0, 2.0, 1), (1.5, 10.0, 8.0, 2)])
    assert flows[0].end_s == pytest.approx(2.25, abs=1e-9)
    assert flows[1].end_s == pytest.approx(3.0, abs=1e-9)
    assert flows[2].end_s == pytest.approx(3.125, abs=1e-9)
    # time lost to sharing: A ran 0.75 s at 4 of its 6; C 0.75 s at 4 of its 8; B never
    assert flows[0].shared_s == pytest.approx(0.25, abs=1e-9)
    assert flows[1].shared_s == pytest.approx(0.0, abs=1e-9)
    assert flows[2].shared_s == pytest.approx(0.375, abs=1e-9)


def test_stop_mid_flow_returns_work_done_and_frees_capacity():
    # as above, C stops (drop-out) at 2.0 having done 0.5 s x 4 = 2; A then runs at 6 again
    flows = _play(
        10.0, [(0.0, 12.0, 6.0, 0), (1.0, 4.0, 2.0, 1), (1.5, 10.0, 8.0, 2)], stops=[(2.0, 2)]
    )
    assert flows[2].stop_done == pytest.approx(2.0, abs=1e-9)
    assert flows[2].end_s == 2.0
    assert flows[0].end_s == pytest.approx(2.0 + 1.0 / 6.0, abs=1e-9)
    assert flows[1].end_s == pytest.approx(3.0, abs=1e-9)


def test_one_flow_costs_min_of_cap_and_capacity():
    assert _play(10.0, [(0.5, 30.0, 6.0, 0)])[0].end_s == pytest.approx(5.5)
    assert _play(4.0, [(0.5, 30.0, 6.0, 0)])[0].end_s == pytest.approx(8.0)
    assert _play(math.inf, [(0.5, 30.0, 6.0, 0)])[0].end_s == 5.5  # one timer, exact


def test_unlimited_capacity_shares_nothing():
    flows = _play(math.inf, [(0.0, 10.0, 1.0, d) for d in range(50)])
    assert all(f.end_s == 10.0 and f.shared_s == 0.0 for f in flows.values())


def test_equal_uncapped_flows_finish_together_in_owner_order():
    env = simpy.Environment()
    res = SharedResource(env, 8.0)
    order = []
    for d in (3, 1, 2, 0):
        res.start(4.0, math.inf, d).done.callbacks.append(lambda e: order.append(e.value.owner))
    env.run()
    assert env.now == pytest.approx(2.0)
    assert order == [0, 1, 2, 3]


def _reference(capacity, flows, stops):
    """Brute force: re-rate every flow by water-filling at every start, stop and finish."""
    flows = sorted(flows)
    remaining, caps, end = {}, {}, {}
    stop_at = dict((o, t) for t, o in stops)
    pending = list(flows)
    t = 0.0
    while pending or remaining:
        active = sorted(remaining)
        rates = {}
        if active:
            left, todo = capacity, sorted(active, key=lambda o: caps[o])
            for i, o in enumerate(todo):
                share = left / (len(todo) - i)
                rates[o] = min(caps[o], share)
                left -= rates[o]
        nxt = [pending[0][0]] if pending else []
        nxt += [t + remaining[o] / rates[o] for o in active if rates[o] > 0]
        nxt += [stop_at[o] for o in active if o in stop_at]
        t_next = min(nxt)
        for o in active:
            remaining[o] -= rates[o] * (t_next - t)
        t = t_next
        for o in active:
            if remaining[o] <= 1e-9 or (o in stop_at and stop_at[o] <= t + 1e-12):
                end[o] = t
                del remaining[o]
        while pending and pending[0][0] <= t:
            s, w, c, o = pending.pop(0)
            remaining[o], caps[o] = w, c
    return end


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    capacity = float(rng.uniform(5, 50))
    flows = [
        (
            float(rng.uniform(0, 10)),
            float(rng.uniform(1, 40)),
            math.inf if rng.random() < 0.3 else float(rng.uniform(0.5, 20)),
            d,
        )
        for d in range(n)
    ]
    stops = [(s + float(rng.uniform(0.1, 3)), o) for s, _, _, o in flows if rng.random() < 0.2]
    ours = _play(capacity, flows, stops)
    ref = _reference(capacity, flows, stops)
    for d in range(n):
        assert ours[d].end_s == pytest.approx(ref[d], rel=1e-9, abs=1e-9), d
