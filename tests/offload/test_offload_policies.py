"""The built-in policies' choices, given estimates, and the planner's estimates themselves."""

import numpy as np
import pytest

from fedsim.models import build_model, describe
from fedsim.offload import FULL, LOCAL, DeviceView, Estimate, split_at
from fedsim.offload.deadline import Deadline
from fedsim.offload.energy import Energy
from fedsim.offload.fastest import Fastest
from fedsim.offload.full import Full
from fedsim.offload.local import Local
from fedsim.offload.split import Split, SplitParams
from fedsim.profiles import load_profiles

PROFILES = load_profiles()
MODEL = describe(build_model("perfit_3nn", (64,), 10), "perfit_3nn", (64,))  # 5 layers


def _view(estimates, trusted=True, deadline_s=None):
    """A view whose estimates come from a table (plan -> (time_s, energy_j, fits))."""

    def estimator(plan):
        t, e, fits = estimates.get(plan, (99.0, 99.0, True))
        return Estimate(t, e, fits)

    return DeviceView(
        3, 0, 0, PROFILES.device("rpi3b"), PROFILES.device("home_gateway"), trusted,
        PROFILES.link("wifi"), 1.0, MODEL, 200, (20,) * 10, deadline_s, 0, False, (),
        lambda: np.random.default_rng(0), estimator,
    )  # fmt: skip


def test_candidates_follow_trust_and_layers():
    assert _view({}).candidates() == [LOCAL, FULL, *(split_at(k) for k in range(1, 5))]
    assert FULL not in _view({}, trusted=False).candidates()


def test_fixed_policies():
    view = _view({})
    assert Local(Local.Params()).choose(view) == LOCAL
    assert Full(Full.Params()).choose(view) == FULL
    assert Full(Full.Params()).choose(_view({}, trusted=False)) == LOCAL
    assert Split(SplitParams(k=3)).choose(view) == split_at(3)


def test_fastest_takes_the_least_time_among_plans_that_fit():
    table = {LOCAL: (5.0, 3.0, True), FULL: (2.0, 1.0, False), split_at(2): (3.0, 4.0, True)}
    assert Fastest(Fastest.Params()).choose(_view(table)) == split_at(2)  # full does not fit
    table[FULL] = (2.0, 1.0, True)
    assert Fastest(Fastest.Params()).choose(_view(table)) == FULL
    tie = {LOCAL: (2.0, 1.0, True), FULL: (2.0, 1.0, True)}
    assert Fastest(Fastest.Params()).choose(_view(tie)) == LOCAL  # ties: the earlier plan


def test_deadline_offloads_only_when_local_misses_it():
    table = {LOCAL: (5.0, 3.0, True), FULL: (2.0, 1.0, True)}
    policy = Deadline(Deadline.Params())
    assert policy.choose(_view(table, deadline_s=6.0)) == LOCAL
    assert policy.choose(_view(table, deadline_s=4.0)) == FULL
    assert policy.choose(_view(table)) == LOCAL  # no deadline


def test_energy_least_joules_within_the_deadline():
    table = {
        LOCAL: (5.0, 3.0, True),
        FULL: (2.0, 2.0, True),
        split_at(1): (3.5, 1.0, True),
        split_at(2): (9.0, 0.5, True),
    }
    policy = Energy(Energy.Params())
    assert policy.choose(_view(table, deadline_s=4.0)) == split_at(1)
    assert policy.choose(_view(table)) == split_at(2)  # no deadline: least energy of all
    assert policy.choose(_view(table, deadline_s=1.0)) == FULL  # none makes it: the fastest


def test_planner_estimates_add_up(tmp_path):
    # local: two model transfers and the local steps; split: its part of the model, the
    # per-batch activations and edge work; full: the data upload and the edge's training
    from helpers import REPO

    from fedsim.config import load_scenario
    from fedsim.sim.offloading import DeviceTask, GroupOffload, OffloadPlanner
    from fedsim.sim.population import Population

    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    pop = Population.from_topology(sc.topology)
    devices = [PROFILES.device(g.hardware) for g in pop.groups]
    links = [PROFILES.link(g.link) for g in pop.groups]
    edges = [PROFILES.device(e.hardware) for e in sc.topology.edges]
    planner = OffloadPlanner(
        sc, pop, [GroupOffload(Local(Local.Params()))] * len(pop.groups), devices, links, edges,
        [MODEL] * len(pop.groups), 268_440, 64 * 4 + 8, 0,
    )  # fmt: skip
    task = DeviceTask(10, 1, 0, 0, 200, (20,) * 10, 1.0, 1.0, None)  # an rpi3b on wifi
    local = planner.estimate(task, LOCAL, True)
    link, device = links[1], devices[1]
    bits = 268_440 * 8
    steps = sum(device.step_s(MODEL.name, MODEL.forward_flops_per_sample, 20) for _ in range(10))
    expected = (
        2 * link.rtt_s + bits / (link.down_mbps_median * 1e6) + bits / (link.up_mbps_median * 1e6)
        + steps
    )  # fmt: skip
    assert local.time_s == pytest.approx(expected, rel=1e-12)
    full = planner.estimate(task, FULL, True)
    gateway = edges[0]
    edge_s = sum(gateway.step_s(MODEL.name, MODEL.forward_flops_per_sample, 20) for _ in range(10))
    data_s = link.rtt_s + 200 * (64 * 4 + 8) * 8 / (link.up_mbps_median * 1e6)
    assert full.time_s == pytest.approx(data_s + edge_s, rel=1e-12)
    assert full.fits and local.fits
    split = planner.estimate(task, split_at(1), True)
    assert split.time_s > 0 and split.device_energy_j < local.device_energy_j * 2
