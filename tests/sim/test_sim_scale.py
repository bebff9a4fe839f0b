"""Systems-only runs at population scale: 10^6 devices, determinism, lazy selection."""

import filecmp
import math

import numpy as np
import pytest
from helpers import REPO

from fedsim.api import check, run
from fedsim.config import load_scenario
from fedsim.seeding import Purpose, stream
from fedsim.sim.availability import Availability
from fedsim.sim.population import sample_counts
from fedsim.sim.simulation import Simulation, SimulationInputs

QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


def scaled(count: int, *extra: str) -> list[str]:
    return [
        "learning=false",
        f"topology.edges.0.devices.0.count={count}",
        "rounds.participants=1000",
        "data.samples_per_device=40",
        "data.samples_sigma=0.5",
        *extra,
    ]


@pytest.mark.parametrize("kind", ["always_on", "on_off"])
def test_a_million_devices_start_and_run(tmp_path, kind):
    overrides = scaled(1_000_000, "stop.max_rounds=2", f"availability.kind={kind}")
    res = run(QUICKSTART, tmp_path / kind, overrides)
    n = 1_000_000 + 20
    assert list(res.rounds["round"]) == [0, 1]
    assert list(res.rounds["participants"]) == [1200, 1200]  # K = 1000, over-selected 1.2x
    assert (res.rounds["completed"] <= 1000).all()
    rows = res.device_rounds
    assert len(rows) == 2400
    assert rows["device_id"].between(0, n - 1).all()
    assert rows.groupby("round")["device_id"].nunique().tolist() == [1200, 1200]
    assert set(rows["status"]) <= {"completed", "discarded", "straggler", "dropped"}
    assert res.device_ua.empty and res.rounds["accuracy"].isna().all()


def test_scaled_run_is_deterministic(tmp_path):
    overrides = scaled(
        100_000, "stop.max_rounds=3", "availability.mean_on_s=2", "availability.mean_off_s=1"
    )
    a = run(QUICKSTART, tmp_path / "a", overrides)
    b = run(QUICKSTART, tmp_path / "b", overrides)
    assert (a.device_rounds["status"] == "dropped").any()  # the on/off process matters
    for name in ("rounds.csv", "device_rounds.csv", "device_ua.csv", "run.json"):
        assert filecmp.cmp(a.path / name, b.path / name, shallow=False), name


def _simulation(count: int, *extra: str) -> Simulation:
    sc = load_scenario(QUICKSTART, scaled(count, *extra))
    prep = check(sc, "quickstart.yaml")
    samples = sample_counts(sc.topology.num_devices(), 40, 0.0, sc.seed)
    inputs = SimulationInputs(prep.profiles, prep.model, prep.algorithm, prep.payloads, samples)
    return Simulation(sc, inputs, None)


def _reference_select(sim: Simulation, round_index: int) -> list[int]:
    """Ask every device, in permutation order; keep the first ``need`` on line."""
    n = sim.population.num_devices
    need = min(n, math.ceil(sim.wanted() * sim.scenario.rounds.over_selection))
    order = stream(sim.scenario.seed, Purpose.SELECT, round_index).permutation(n)
    avail = Availability(sim.scenario.availability, sim.scenario.seed)
    online = [int(d) for d in order if avail.online_at(int(d), sim.env.now)]
    return sorted(online[:need])


@pytest.mark.parametrize(
    ("count", "means"), [(5_000, (60.0, 20.0)), (3_000, (2.0, 1.0)), (1_200, (0.2, 8.0))]
)
def test_lazy_selection_equals_asking_every_device(count, means):
    # the last case has fewer on-line devices than wanted: all of them are chosen
    sim = _simulation(
        count, f"availability.mean_on_s={means[0]}", f"availability.mean_off_s={means[1]}"
    )
    for round_index, t in enumerate([0.0, 1.5, 40.0, 41.0, 300.0]):
        if t > sim.env.now:
            sim.env.run(until=t)
        chosen = sim.select(round_index)
        assert chosen.tolist() == _reference_select(sim, round_index)
        assert len(chosen) == 1200 or count == 1_200


def test_sample_counts_are_keyed_per_device():
    counts = sample_counts(100_000, 50, 0.5, 3)
    assert counts.dtype == np.int64 and counts.min() >= 1
    assert np.median(counts) == pytest.approx(50, abs=1)
    assert (sample_counts(10, 50, 0.5, 3) == counts[:10]).all()  # independent of population
    assert not (sample_counts(10, 50, 0.5, 4) == counts[:10]).all()
    assert (sample_counts(7, 12, 0.0, 3) == 12).all()
    assert sample_counts(1000, 1, 3.0, 1).min() == 1
