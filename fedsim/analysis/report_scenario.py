"""The report's scenario summary: the settings that apply, the sweep, configurations, seeds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fedsim.analysis.load import RunData, RunSet
from fedsim.analysis.tables import format_si

__all__ = ["scenario_rows"]


def _describe_topology(topo: dict[str, Any]) -> str:
    parts = []
    for edge in topo.get("edges", []):
        groups = ", ".join(
            f"{g.get('count')}× {g.get('hardware')} on {g.get('link')}"
            for g in edge.get("devices", [])
        )
        trusted = ", trusted" if edge.get("trusted") else ""
        parts.append(f"edge {edge.get('name')} ({edge.get('hardware')}{trusted}): {groups}")
    cloud = topo.get("cloud", {})
    parts.insert(0, f"cloud: {cloud.get('hardware')} via {cloud.get('backhaul')}")
    return "; ".join(parts)


def _fmt_dict(d: Any) -> str:
    if not isinstance(d, dict):
        return str(d)
    return ", ".join(
        f"{k}=({_fmt_dict(v)})" if isinstance(v, dict) else f"{k}={v}"
        for k, v in d.items()
        if v is not None and v != {}
    )


#: The fields of a scenario section that apply, by its ``kind`` (see fedsim/config.py);
#: the others hold defaults that the run did not use. A kind not listed keeps all.
_APPLIES: dict[str, dict[str, tuple[str, ...]]] = {
    "partition": {
        "iid": (),
        "natural": ("train_per_device", "test_per_device", "balanced_test"),
        "shards": ("shards_per_device",),
        "dirichlet": ("alpha", "test_per_device"),
    },
    "runtime": {"inline": ("torch_threads", "vectorize")},
    "availability": {"always_on": ()},
    "failure_detection": {"instant": ()},
}


def _applying(section: str, d: Any) -> Any:
    """Return the scenario section ``d`` with only its kind and the fields that apply."""
    if not isinstance(d, dict) or d.get("kind") not in _APPLIES[section]:
        return d
    return {"kind": d["kind"], **{k: d[k] for k in _APPLIES[section][d["kind"]] if k in d}}


def _data_text(data: dict[str, Any]) -> str:
    partition = _applying("partition", data.get("partition", {}))
    text = f"{data.get('dataset', '?')}, partition {_fmt_dict(partition)}"
    if data.get("samples_per_device") is not None:
        text += f", {data['samples_per_device']} samples per device"
        if data.get("samples_sigma"):
            text += f" (lognormal, sigma {data['samples_sigma']})"
    if data.get("options"):
        text += f", options {_fmt_dict(data['options'])}"
    return text


def _model_text(run: RunData) -> str:
    model = run.meta.get("model", {})
    if isinstance(model.get("num_params"), int) and isinstance(model.get("param_bytes"), int):
        return (
            f"{model.get('name', run.scenario.get('model', '?'))}, "
            f"{model['num_params']:,} parameters, {format_si(model['param_bytes'], 'B')}"
        )
    return str(run.scenario.get("model", "?"))


def _rounds_text(rounds: dict[str, Any]) -> str:
    shown = dict(rounds)
    if "failure_detection" in shown:
        shown["failure_detection"] = _applying("failure_detection", shown["failure_detection"])
    return _fmt_dict(shown)


def _algorithm_text(algo: dict[str, Any]) -> str:
    return f"{algo.get('use', '?')} {_fmt_dict(algo.get('params', {}))}".strip()


def scenario_rows(rs: RunSet) -> list[tuple[str, str]]:
    """Return the Scenario table's (setting, value) rows, from the first run's scenario."""
    run = rs.runs[0]
    sc = run.scenario
    learning = sc.get("learning", True) is not False
    rows = [
        ("Scenario", f"{sc.get('name', '?')} ({run.meta.get('scenario_file', '?')})"),
        ("fedsim version", str(run.meta.get("fedsim_version", "?"))),
        (
            "Learning",
            "true" if learning else "false (systems only: no model is trained or evaluated)",
        ),
        ("Data", _data_text(sc.get("data", {}))),
        ("Model", _model_text(run)),
        ("Topology", _describe_topology(sc.get("topology", {}))),
        ("Algorithm", _algorithm_text(sc.get("algorithm", {}))),
        ("Rounds", _rounds_text(sc.get("rounds", {}))),
        ("Availability", _fmt_dict(_applying("availability", sc.get("availability", {})))),
        ("Stop", _fmt_dict(sc.get("stop", {}))),
    ]
    if learning:
        rows.append(("Evaluation", _fmt_dict(sc.get("evaluation", {}))))
    network = sc.get("network", {})
    if isinstance(network, dict) and network.get("contention") is False:
        rows.append(("Network", "contention: false (each transfer at its own rate)"))
    traces = _fmt_dict(sc.get("traces", {}))
    if traces:
        rows.append(("Traces", traces))
    rows.append(("Runtime", _fmt_dict(_applying("runtime", sc.get("runtime", {})))))
    rows += _runs_rows(rs)
    return rows


def _runs_rows(rs: RunSet) -> list[tuple[str, str]]:
    """Return the rows on the sweep, the configurations, the seeds and incomplete runs."""
    rows = []
    if rs.sweep:
        grid = rs.sweep.get("grid", {})
        rows.append(
            (
                "Sweep grid",
                "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items()),
            )
        )
        rows.append(("Sweep scenario", str(rs.sweep.get("scenario", "?"))))
    configs = Counter(r.label for r in rs.runs)
    if not rs.grid_keys and len(configs) > 1:
        rows.append(
            (
                "Configurations",
                f"{len(configs)} (the rows above describe the first run's): "
                + "; ".join(f"{c} ({n} runs)" for c, n in configs.items()),
            )
        )
    seeds = sorted({r.seed for r in rs.runs})
    n_seeds = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    rows.append(("Runs", f"{len(rs.runs)} ({n_seeds}: {', '.join(map(str, seeds))})"))
    if rs.index is not None:
        not_done = rs.index[~rs.index["status"].isin(["done"])]
        if len(not_done):
            rows.append(
                (
                    "Incomplete runs",
                    ", ".join(
                        f"{r} ({s})"
                        for r, s in zip(not_done["run_id"], not_done["status"], strict=True)
                    ),
                )
            )
    return rows
