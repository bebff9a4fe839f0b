"""Fixtures for hand-checked timing: fixed-speed profiles with no jitter."""

from pathlib import Path

import pytest
import yaml


def _num(value: float) -> dict:
    return {"value": value, "source": "test fixture"}


def device_profile(name: str, tier: str, flops: float, overhead: float) -> dict:
    return {
        "name": name,
        "tier": tier,
        "description": "test profile",
        "compute": {
            "flops_per_s": _num(flops),
            "overhead_s_per_step": _num(overhead),
            "jitter_sigma": _num(0.0),
        },
        "memory_bytes": _num(2**30),
        "power_w": {
            "compute": _num(5.0),
            "transmit": _num(2.0),
            "receive": _num(1.0),
            "idle": _num(0.5),
        },
    }


def link_profile(name: str, up_mbps: float, down_mbps: float, rtt_ms: float) -> dict:
    return {
        "name": name,
        "description": "test link",
        "up_mbps": {"median": _num(up_mbps), "sigma": _num(0.0)},
        "down_mbps": {"median": _num(down_mbps), "sigma": _num(0.0)},
        "rtt_ms": _num(rtt_ms),
    }


@pytest.fixture
def fixed_profiles(tmp_path: Path) -> Path:
    """A profiles folder: fast/slow devices, an edge, a cloud, a LAN and a backhaul."""
    root = tmp_path / "profiles"
    (root / "devices").mkdir(parents=True)
    (root / "networks").mkdir()
    devices = [
        device_profile("fast", "device", 1e9, 0.01),
        device_profile("slow", "device", 1e6, 0.01),
        device_profile("srv", "edge", 1e10, 0.0),
        device_profile("cld", "cloud", 1e11, 0.0),
    ]
    links = [link_profile("lan", 8.0, 16.0, 10.0), link_profile("bh", 80.0, 80.0, 20.0)]
    for d in devices:
        (root / "devices" / f"{d['name']}.yaml").write_text(yaml.safe_dump(d))
    for link in links:
        (root / "networks" / f"{link['name']}.yaml").write_text(yaml.safe_dump(link))
    return root


def hand_scenario(name: str, seed: int, devices: list[dict], **rest) -> dict:
    """Return a hand-checkable scenario dict around one edge holding ``devices``.

    Edge ``srv`` (backhaul ``bh``), cloud ``cld``, FedAvg (lr 0.1, E 1, B 20) on an iid
    digits split, no learning; ``rest`` adds or replaces top-level keys.
    """
    sc = {
        "name": name,
        "seed": seed,
        "data": {"dataset": "digits", "partition": {"kind": "iid"}},
        "model": "digits_mlp",
        "topology": {
            "cloud": {"hardware": "cld", "backhaul": "bh"},
            "edges": [{"name": "e0", "hardware": "srv", "backhaul": "bh", "devices": devices}],
        },
        "algorithm": {"use": "fedavg", "params": {"lr": 0.1, "local_epochs": 1, "batch_size": 20}},
        "learning": False,
    }
    sc.update(rest)
    return sc
