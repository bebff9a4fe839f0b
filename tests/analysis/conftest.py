"""Fixtures: a hand-made run folder with hand-computed answers, and a synthetic sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from demo import make_demo_sweep, write_run

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


# The result columns of a run with offloading (fedsim/sim/rows.py; checked in the tests).
OFFLOAD_ROUND_COLUMNS = [
    "version", "round", "round_start_s", "virtual_time_s", "participants", "completed",
    "stragglers", "dropped", "bytes_up", "bytes_down", "energy_j", "download_s", "compute_s",
    "upload_s", "wait_s", "edge_s", "cloud_s", "accuracy", "loss", "ua_mean", "ua_p10",
    "ua_p50", "ua_p90", "oom", "down_shared_s", "up_shared_s", "energy_compute_j",
    "energy_radio_j", "energy_idle_j", "offloaded", "edge_compute_s", "edge_queue_s",
    "act_bytes_up", "act_bytes_down", "data_bytes_up", "ua_mean_clean", "ua_before_mean",
]  # fmt: skip
OFFLOAD_DEVICE_COLUMNS = [
    "round", "device_id", "edge_id", "profile", "link", "status", "start_s", "end_s",
    "download_s", "compute_s", "upload_s", "wait_s", "bytes_up", "bytes_down", "energy_j",
    "fetch_s", "down_shared_s", "up_shared_s", "down_mbps", "up_mbps", "energy_compute_j",
    "energy_radio_j", "energy_idle_j", "plan", "edge_compute_s", "edge_queue_s",
    "act_bytes_up", "act_bytes_down", "data_bytes_up", "raw_data_left",
]  # fmt: skip
#: Offload run: rounds 0..2, each 10 s long, edge_s 1, cloud_s 0.5, deadline 8.5 s (close at
#: start + 8.5). Edge 0 "home": devices 0, 1 (rpi4, local), 2 (rpi3b, full: uploads its data
#: in round 0, 3 s of edge training every round). Edge 1 "operator": 3 (phone_mid, split(2)),
#: 4 (phone_mid, local in round 0, split(2) after, straggler in round 2), 5 (phone_low, oom).
#: Edge utilisation, (sum of edge_compute_s - edge_queue_s + edge_s) / 10 s:
#: home 0.4, 0.4, 0.4; operator (0.5 + 1) / 10, (0.5 + 0.5 + 1) / 10, (0.5 + 1 + 1) / 10.
OFFLOAD_UTILISATION = {"home": [0.4, 0.4, 0.4], "operator": [0.15, 0.2, 0.25]}


def offload_meta(seed: int = 7) -> dict:
    meta = hand_meta(seed, name="offload")
    scenario = meta["scenario"]
    scenario["topology"]["edges"] = [
        {
            "name": "home",
            "hardware": "home_gateway",
            "backhaul": "wan",
            "trusted": True,
            "devices": [
                {"hardware": "rpi4", "link": "wifi", "count": 2},
                {"hardware": "rpi3b", "link": "wifi", "count": 1, "offload": {"use": "full"}},
            ],
        },
        {
            "name": "operator",
            "hardware": "edge_server",
            "backhaul": "wan",
            "trusted": False,
            "devices": [
                {
                    "hardware": "phone_mid",
                    "link": "4g",
                    "count": 2,
                    "offload": {"use": "split", "params": {"k": 2}},
                },
                {"hardware": "phone_low", "link": "3g", "count": 1},
            ],
        },
    ]
    scenario["rounds"] = {"participants": 6, "deadline_s": 8.5, "cloud_every": 1}
    scenario["stop"] = {"max_rounds": 3, "target_accuracy": None}
    meta["summary"] = {"rounds": 3, "virtual_time_s": 30.0, "final_accuracy": 0.8}
    return meta


def _offload_device(r: int, d: int) -> dict:
    t0 = 10.0 * r
    base = dict(
        round=r, device_id=d, start_s=t0, status="completed", plan="local", fetch_s=0.5,
        down_shared_s=0.0, up_shared_s=0.0, edge_compute_s=0.0, edge_queue_s=0.0,
        act_bytes_up=0, act_bytes_down=0, data_bytes_up=0, raw_data_left=False,
        bytes_up=40, bytes_down=40, down_mbps=1.0, up_mbps=1.0,
    )  # fmt: skip
    # device -> (edge, profile, link, download, compute, upload, wait)
    phases = {
        0: (0, "rpi4", "wifi", 1.0, 4.0, 1.0, 2.5),
        1: (0, "rpi4", "wifi", 1.0, 5.0, 1.5, 1.0),
        2: (0, "rpi3b", "wifi", 0.5, 3.0, 0.0, 5.0),
        3: (1, "phone_mid", "4g", 1.0, 5.0, 1.0, 1.5),
        4: (1, "phone_mid", "4g", 1.0, 5.0, 1.0, 1.5),
        5: (1, "phone_low", "3g", 0.0, 0.0, 0.0, 0.0),
    }
    edge, profile, link, down, comp, up, wait = phases[d]
    row = dict(base, edge_id=edge, profile=profile, link=link)
    if d == 2:  # full: the edge trains 3 s; round 0 first uploads the training data (2 s)
        row.update(plan="full", edge_compute_s=3.0, bytes_up=0, bytes_down=0, down_mbps=0.0)
        row.update(up_mbps=0.0)
        if r == 0:
            row.update(fetch_s=0.0, data_bytes_up=5000, raw_data_left=True, up_mbps=0.02)
            down, up, wait = 0.0, 2.0, 3.5
    if d == 3 or (d == 4 and r > 0):
        row.update(plan="split(2)", edge_compute_s=1.0, edge_queue_s=0.5)
        row.update(act_bytes_up=300, act_bytes_down=300)
        if d == 4 and r == 2:  # cut by the deadline while training
            comp, up, wait = 7.5, 0.0, 0.0
            row.update(status="straggler", edge_compute_s=1.5, bytes_up=0)
    if d == 5:
        row.update(status="oom", fetch_s=0.0, bytes_up=0, bytes_down=0, down_mbps=0.0)
        row.update(up_mbps=0.0)
    end = t0 + down + comp + up
    row.update(download_s=down, compute_s=comp, upload_s=up, wait_s=wait, end_s=end)
    e_comp = 0.0 if row["plan"] == "full" else comp - row["edge_compute_s"]  # device's own
    row.update(energy_compute_j=e_comp, energy_radio_j=0.1 * (down - row["fetch_s"] + up))
    row.update(energy_idle_j=0.05 * (row["fetch_s"] + wait))
    row["energy_j"] = row["energy_compute_j"] + row["energy_radio_j"] + row["energy_idle_j"]
    return row


def write_offload_run(run_dir: Path, seed: int = 7) -> Path:
    """Write a run folder in the offloading format: three rounds, two edges, full, split, oom."""
    import pandas as pd

    devices = pd.DataFrame(
        [_offload_device(r, d) for r in range(3) for d in range(6)], columns=OFFLOAD_DEVICE_COLUMNS
    )
    rounds = []
    for r, g in devices.groupby("round"):
        kept = g[g["status"] == "completed"]
        start = 10.0 * r
        rounds.append(
            dict(
                version=r + 1,
                round=r,
                round_start_s=start,
                virtual_time_s=start + 10.0,
                participants=len(g),
                completed=len(kept),
                stragglers=int((g["status"] == "straggler").sum()),
                dropped=0,
                bytes_up=int((g["bytes_up"] + g["act_bytes_up"] + g["data_bytes_up"]).sum()),
                bytes_down=int((g["bytes_down"] + g["act_bytes_down"]).sum()),
                energy_j=g["energy_j"].sum(),
                **{p: kept[p].mean() for p in ("download_s", "compute_s", "upload_s", "wait_s")},
                edge_s=1.0,
                cloud_s=0.5,
                accuracy=0.6 + 0.1 * r,
                loss=0.4 - 0.1 * r,
                ua_mean=0.55 + 0.1 * r,
                ua_p10=None,
                ua_p50=None,
                ua_p90=None,
                oom=int((g["status"] == "oom").sum()),
                **{
                    c: g[c].sum()
                    for c in (
                        "down_shared_s",
                        "up_shared_s",
                        "energy_compute_j",
                        "energy_radio_j",
                        "energy_idle_j",
                        "edge_compute_s",
                        "edge_queue_s",
                        "act_bytes_up",
                        "act_bytes_down",
                        "data_bytes_up",
                    )
                },
                offloaded=int((g["plan"] != "local").sum()),
            )  # fmt: skip
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rounds, columns=OFFLOAD_ROUND_COLUMNS).to_csv(run_dir / "rounds.csv", index=False)
    devices.to_csv(run_dir / "device_rounds.csv", index=False)
    ua = [
        dict(version=v, device_id=d, accuracy=0.5 + 0.05 * d + 0.01 * v)
        for v in (1, 2, 3)
        for d in range(5)
    ]
    pd.DataFrame(ua).to_csv(run_dir / "device_ua.csv", index=False)
    (run_dir / "timings.json").write_text(json.dumps({"wall_s": 1.0}))
    (run_dir / "run.json").write_text(json.dumps(offload_meta(seed), indent=2))
    return run_dir


@pytest.fixture
def offload_run(tmp_path: Path) -> Path:
    """A run folder with offloading: full and split devices on two edges, and an oom device."""
    return write_offload_run(tmp_path / "offload")
