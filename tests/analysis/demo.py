"""Write synthetic run and sweep folders in fedsim's result format (for tests and demos)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.analysis.load import DEVICE_ROUND_COLUMNS, DEVICE_UA_COLUMNS, ROUND_COLUMNS

__all__ = ["write_run", "make_demo_run", "make_demo_sweep"]


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})


def write_run(
    run_dir: str | Path,
    meta: dict[str, Any],
    rounds: Sequence[dict[str, Any]],
    device_rounds: Sequence[dict[str, Any]] = (),
    device_ua: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write a run folder from plain rows (missing columns are written empty)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(run_dir / "rounds.csv", ROUND_COLUMNS, rounds)
    _write_csv(run_dir / "device_rounds.csv", DEVICE_ROUND_COLUMNS, device_rounds)
    _write_csv(run_dir / "device_ua.csv", DEVICE_UA_COLUMNS, device_ua)
    (run_dir / "timings.json").write_text(json.dumps({"wall_s": 1.0}))
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def _scenario(
    name: str, seed: int, participants: int, devices: int, deadline_s: float | None, rounds: int
) -> dict[str, Any]:
    half = devices // 2
    return {
        "name": name,
        "seed": seed,
        "data": {"dataset": "synthetic", "partition": {"kind": "dirichlet", "alpha": 0.5}},
        "model": "mlp",
        "topology": {
            "cloud": {"hardware": "cloud_server", "backhaul": "wan"},
            "edges": [
                {
                    "name": "edge0",
                    "hardware": "edge_server",
                    "backhaul": "wan",
                    "trusted": False,
                    "devices": [
                        {"hardware": "rpi4", "link": "wifi", "count": half},
                        {"hardware": "phone", "link": "4g", "count": devices - half},
                    ],
                }
            ],
        },
        "algorithm": {"use": "fedavg", "params": {}},
        "rounds": {
            "participants": participants,
            "participation": None,
            "over_selection": 1.0,
            "deadline_s": deadline_s,
            "min_report_fraction": 0.0,
            "cloud_every": 1,
        },
        "availability": {"kind": "on_off", "mean_on_s": 3600.0, "mean_off_s": 600.0},
        "stop": {"max_rounds": rounds, "max_virtual_s": None, "target_accuracy": 0.8},
        "evaluation": {"every": 1, "ua": True},
        "learning": True,
        "runtime": {"kind": "inline", "workers": 1},
    }


def make_demo_run(
    run_dir: str | Path,
    seed: int = 1,
    participants: int = 5,
    devices: int = 30,
    rounds: int = 20,
    deadline_s: float | None = 30.0,
    name: str = "demo",
) -> Path:
    """Write a plausible synthetic run (not a simulation: numbers drawn from simple formulas).

    Devices have fixed speeds; each round ``participants`` devices are drawn, some
    straggle past ``deadline_s`` or drop out; accuracy rises towards 0.9 and is noisier
    for few participants. The per-round phase means add up to the round time exactly.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(participants,)))
    speed = np.random.default_rng(7).uniform(0.6, 3.2, devices)  # same devices in every run
    offset = np.random.default_rng(8).normal(0.0, 0.04, devices)
    model_bytes = 400_000
    round_rows: list[dict[str, Any]] = []
    dev_rows: list[dict[str, Any]] = []
    ua_rows: list[dict[str, Any]] = []
    t = 0.0
    cum_acc = 0.0
    for r in range(1, rounds + 1):
        chosen = np.sort(rng.choice(devices, size=participants, replace=False))
        recs = []
        for d in chosen:
            dl = 0.05 + model_bytes / (rng.uniform(2e6, 8e6) if d < devices // 2 else 1.5e6)
            cp = 10.0 * speed[d] * rng.uniform(0.9, 1.1)
            ul = 0.05 + model_bytes / (rng.uniform(1e6, 4e6) if d < devices // 2 else 0.6e6)
            drop = rng.random() < 0.05
            recs.append(
                dict(
                    device=int(d),
                    dl=dl,
                    cp=cp,
                    ul=ul,
                    drop=drop,
                    drop_at=rng.uniform(0.2, 0.9) * (dl + cp + ul),
                )
            )
        finish = [x["dl"] + x["cp"] + x["ul"] for x in recs]
        ok = [f for x, f in zip(recs, finish, strict=True) if not x["drop"]]
        limit = deadline_s if deadline_s is not None else math.inf
        on_time = [f for f in ok if f <= limit]
        device_phase = max(on_time) if len(on_time) == len(ok) else limit
        if not on_time:
            device_phase = limit if math.isfinite(limit) else max(finish)
        edge_s, cloud_s = 0.2, 0.5
        completed, stragglers, dropped = [], 0, 0
        for x, f in zip(recs, finish, strict=True):
            status = "completed"
            end = t + f
            if x["drop"]:
                status, end = "dropped", t + x["drop_at"]
                dropped += 1
            elif f > limit:
                status, end = "straggler", t + limit
                stragglers += 1
            wait = device_phase - f if status == "completed" else 0.0
            if status == "completed":
                completed.append((x["dl"], x["cp"], x["ul"], wait))
            up = model_bytes if status == "completed" else 0
            dev_rows.append(
                dict(
                    round=r,
                    device_id=x["device"],
                    edge_id="edge0",
                    profile="rpi4" if x["device"] < devices // 2 else "phone",
                    link="wifi" if x["device"] < devices // 2 else "4g",
                    status=status,
                    start_s=t,
                    end_s=end,
                    download_s=x["dl"],
                    compute_s=x["cp"],
                    upload_s=x["ul"],
                    wait_s=wait,
                    bytes_up=up,
                    bytes_down=model_bytes,
                    energy_j=round(3.0 * (end - t), 6),
                )
            )
        means = np.mean(np.array(completed), axis=0) if completed else np.zeros(4)
        if not completed:
            means[3] = device_phase
        end_t = t + float(np.sum(means)) + edge_s + cloud_s
        cum_acc += len(completed) / participants
        acc = 0.9 * (1 - math.exp(-cum_acc / 4)) + rng.normal(0, 0.06 / math.sqrt(participants))
        acc = float(min(max(acc, 0.05), 0.99))
        ua_dev = np.clip(acc + offset + rng.normal(0, 0.01, devices), 0, 1)
        ua_rows.extend(
            dict(version=r, device_id=i, accuracy=round(float(a), 6)) for i, a in enumerate(ua_dev)
        )
        round_rows.append(
            dict(
                version=r,
                round=r,
                round_start_s=t,
                virtual_time_s=end_t,
                participants=participants,
                completed=len(completed),
                stragglers=stragglers,
                dropped=dropped,
                bytes_up=model_bytes * len(completed),
                bytes_down=model_bytes * participants,
                energy_j=sum(x["energy_j"] for x in dev_rows if x["round"] == r),
                download_s=means[0],
                compute_s=means[1],
                upload_s=means[2],
                wait_s=means[3],
                edge_s=edge_s,
                cloud_s=cloud_s,
                accuracy=round(acc, 6),
                loss=round(2 * (1 - acc), 6),
                ua_mean=float(ua_dev.mean()),
                ua_p10=float(np.quantile(ua_dev, 0.1)),
                ua_p50=float(np.quantile(ua_dev, 0.5)),
                ua_p90=float(np.quantile(ua_dev, 0.9)),
            )
        )
        t = end_t
    meta = {
        "fedsim_version": "demo",
        "seed": seed,
        "scenario_file": "scenarios/demo.yaml",
        "scenario": _scenario(name, seed, participants, devices, deadline_s, rounds),
        "profiles": {
            "devices/rpi4": {},
            "devices/phone": {},
            "networks/wifi": {},
            "networks/4g": {},
        },
        "model": {"name": "mlp", "num_params": 100_000, "param_bytes": model_bytes},
        "packages": {},
        "summary": {
            "rounds": rounds,
            "virtual_time_s": t,
            "final_accuracy": round_rows[-1]["accuracy"],
            "bytes_up": sum(x["bytes_up"] for x in round_rows),
            "bytes_down": sum(x["bytes_down"] for x in round_rows),
            "energy_j": sum(x["energy_j"] for x in round_rows),
        },
    }
    return write_run(run_dir, meta, round_rows, dev_rows, ua_rows)


def make_demo_sweep(
    out_dir: str | Path,
    participants: Sequence[int] = (3, 5, 10, 30),
    seeds: int = 3,
    rounds: int = 20,
) -> Path:
    """Write a synthetic sweep folder over ``rounds.participants`` in ``run_sweep``'s layout."""
    out_dir = Path(out_dir)
    key = "rounds.participants"
    rows = []
    for k in participants:
        for i in range(seeds):
            run_id = f"{key}={k}__seed={i + 1}"
            make_demo_run(out_dir / "runs" / run_id, seed=i + 1, participants=k, rounds=rounds)
            rows.append(
                {
                    "run_id": run_id,
                    key: str(k),
                    "seed": str(i + 1),
                    "status": "done",
                    "run_dir": f"runs/{run_id}",
                }
            )
    _write_csv(out_dir / "index.csv", ["run_id", key, "seed", "status", "run_dir"], rows)
    (out_dir / "sweep.json").write_text(
        json.dumps(
            {
                "scenario": "scenarios/demo.yaml",
                "grid": {key: [str(k) for k in participants]},
                "seeds": seeds,
                "base_seed": 1,
                "extra_sets": [],
            },
            indent=2,
        )
    )
    return out_dir
