"""Fixtures: a hand-made run folder with hand-computed answers, and a synthetic sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.demo import make_demo_sweep, write_run

# (round, start, end, accuracy, ua_mean, download, compute, upload, wait, edge, cloud)
HAND_ROUNDS = [
    (1, 0.0, 10.0, 0.50, 0.55, 1.0, 6.0, 1.0, 1.0, 0.5, 0.5),
    (2, 10.0, 25.0, None, None, 1.0, 8.0, 2.0, 3.0, 0.5, 0.5),
    (3, 25.0, 32.5, 0.82, 0.78, 1.0, 4.0, 1.0, 0.5, 0.5, 0.5),
    (4, 32.5, 50.0, 0.79, 0.86, 2.0, 10.0, 2.0, 2.5, 0.5, 0.5),
    (5, 50.0, 61.0, 0.91, 0.88, 1.0, 7.0, 1.0, 1.0, 0.5, 0.5),
]


def hand_meta(seed: int = 4, name: str = "hand") -> dict:
    return {
        "fedsim_version": "test",
        "seed": seed,
        "scenario_file": "scenarios/hand.yaml",
        "scenario": {
            "name": name,
            "seed": seed,
            "data": {"dataset": "digits", "partition": {"kind": "iid"}},
            "model": "mlp",
            "topology": {
                "cloud": {"hardware": "cloud_server", "backhaul": "wan"},
                "edges": [
                    {
                        "name": "e0",
                        "hardware": "edge_server",
                        "backhaul": "wan",
                        "trusted": False,
                        "devices": [{"hardware": "rpi4", "link": "wifi", "count": 3}],
                    }
                ],
            },
            "algorithm": {"use": "fedavg", "params": {}},
            "rounds": {"participants": 3, "deadline_s": 12.0, "cloud_every": 1},
            "stop": {"max_rounds": 5, "target_accuracy": None},
            "evaluation": {"every": 1, "ua": True},
        },
        "profiles": {},
        "model": {"name": "mlp", "num_params": 10, "param_bytes": 40},
        "packages": {},
        "summary": {
            "rounds": 5,
            "virtual_time_s": 61.0,
            "final_accuracy": 0.91,
            "bytes_up": 500,
            "bytes_down": 600,
            "energy_j": 15.0,
        },
    }


def write_hand_run(run_dir: Path, seed: int = 4, shift_s: float = 0.0) -> Path:
    rounds = []
    for r, start, end, acc, ua, dl, cp, ul, wt, ed, cl in HAND_ROUNDS:
        rounds.append(
            dict(
                version=r,
                round=r,
                round_start_s=start + shift_s,
                virtual_time_s=end + shift_s,
                participants=3,
                completed=2,
                stragglers=1 if r == 2 else 0,
                dropped=1 if r != 2 else 0,
                bytes_up=100,
                bytes_down=120,
                energy_j=3.0,
                download_s=dl,
                compute_s=cp,
                upload_s=ul,
                wait_s=wt,
                edge_s=ed,
                cloud_s=cl,
                accuracy=acc,
                loss=None if acc is None else 1 - acc,
                ua_mean=ua,
                ua_p10=None,
                ua_p50=None,
                ua_p90=None,
            )
        )
    devices = []
    for r, start, *_ in HAND_ROUNDS:
        for d, status in enumerate(
            ["completed", "straggler" if r == 2 else "dropped", "completed"]
        ):
            devices.append(
                dict(
                    round=r,
                    device_id=d,
                    edge_id="e0",
                    profile="rpi4",
                    link="wifi",
                    status=status,
                    start_s=start,
                    end_s=start + 5 + d,
                    download_s=1.0,
                    compute_s=3.0 + d,
                    upload_s=1.0,
                    wait_s=0.5,
                    bytes_up=50,
                    bytes_down=40,
                    energy_j=1.0,
                )
            )
    ua = [
        dict(version=v, device_id=d, accuracy=0.5 + 0.1 * d + 0.01 * v)
        for v in (1, 3, 4, 5)
        for d in range(3)
    ]
    return write_run(run_dir, hand_meta(seed), rounds, devices, ua)


@pytest.fixture
def make_hand_run():
    """Return the writer of hand-made run folders: ``(run_dir, seed=4, shift_s=0.0) -> Path``."""
    return write_hand_run


@pytest.fixture
def hand_run(tmp_path: Path) -> Path:
    return write_hand_run(tmp_path / "hand_run")


@pytest.fixture(scope="session")
def demo_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_sweep(
        tmp_path_factory.mktemp("demo") / "sweep", participants=(3, 30), seeds=3, rounds=12
    )
