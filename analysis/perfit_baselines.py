"""PerFit's case study: the centralised baselines (SVM, kNN, RF, c3NN, cCNN), cached per seed.

:func:`baseline_runs` runs :func:`fedsim.baselines.run_baselines` on the case study's
scenario for each seed and data view (the 3NN's engineered features, the CNN's inertial
windows) and keeps each per-device table beside the key it was made with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analysis.perfit_methods import BASELINES, MODEL_SETS, SCENARIO, Setting
from fedsim.baselines import BaselineOptions, run_baselines
from fedsim.config import load_scenario, scenario_from_dict, scenario_to_dict
from fedsim.errors import InputError


def baseline_runs(
    out: Path, setting: Setting, say: Callable[[str], None] = print
) -> tuple[pd.DataFrame, float]:
    """Run (or reuse) the centralised baselines for every seed; return their device UA.

    Per seed and data view, the per-device table is cached in
    ``out/baselines/<model>-seed=N/baselines_per_device.csv`` beside ``key.json`` (the
    resolved scenario and options); a cache made with another key is run again. Returns
    the rows (``method, seed, device_id, accuracy``) and the seconds the baselines took
    (as recorded when each was made).
    """
    base_seed = load_scenario(SCENARIO).seed
    frames, seconds = [], 0.0
    for model in MODEL_SETS:
        labels = {lab: m for lab, (m, mod) in BASELINES.items() if mod == model}
        opts = dataclasses.replace(setting.baseline, methods=tuple(labels.values()))
        for i in range(setting.seeds):
            seed = base_seed + i
            sets = [*MODEL_SETS[model], f"seed={seed}"]
            key = {
                "scenario": scenario_to_dict(load_scenario(SCENARIO, sets)),
                "options": dataclasses.asdict(opts),
            }
            folder = out / "baselines" / f"{model.lower()}-seed={seed}"
            table, took = _cached_baselines(folder, key, opts, sets, say)
            seconds += took
            names = {m: lab for lab, m in labels.items()}
            frames.append(
                table.assign(method=table["method"].map(names), seed=seed)[
                    ["method", "seed", "device_id", "accuracy"]
                ]
            )
    return pd.concat(frames, ignore_index=True), seconds


def _cached_baselines(
    folder: Path, key: dict, opts: BaselineOptions, sets: list[str], say: Callable[[str], None]
) -> tuple[pd.DataFrame, float]:
    """Return a cached per-device baseline table and its seconds, or run and cache it."""
    csv, meta = folder / "baselines_per_device.csv", folder / "key.json"
    want = json.dumps(key, sort_keys=True, default=str)
    if csv.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        if _key_text(saved.get("key")) == want:
            return pd.read_csv(csv), float(saved.get("seconds", math.nan))
    say(f"baselines {folder.name}: {','.join(opts.methods)}")
    t0 = time.perf_counter()
    table = run_baselines(SCENARIO, opts, overrides=sets, progress=lambda s: say(f"  {s}"))
    took = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    tmp = csv.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(csv)
    meta.write_text(json.dumps({"key": json.loads(want), "seconds": took}, indent=1))
    return table, took


def _key_text(saved: object) -> str:
    """Return a cached key as text, its scenario as this version of fedsim resolves it.

    A field added to the scenario schema since the cache was made (with its default) is
    then not a difference; a scenario this version cannot read is compared as it is.
    """
    if isinstance(saved, dict) and isinstance(saved.get("scenario"), dict):
        try:
            scenario = scenario_to_dict(scenario_from_dict(saved["scenario"], "key.json"))
            saved = {**saved, "scenario": scenario}
        except InputError:
            pass
    return json.dumps(saved, sort_keys=True, default=str)
