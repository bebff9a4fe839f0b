"""Reproduce MTFL's Table 2, Table 3 and Fig. 5 on MNIST and write docs/mtfl_reproduction.md.

Usage (from the repository root; MNIST's IDX files in ``$FEDSIM_DATA/mnist``)::

    FEDSIM_DATA=../shared/data python analysis/make_mtfl_docs.py [--seeds 3] [--parallel 2]
    FEDSIM_DATA=../shared/data python analysis/make_mtfl_docs.py --only table2   # one part
    FEDSIM_DATA=../shared/data python analysis/make_mtfl_docs.py --quick         # smoke test

Mills et al., "Multi-Task Federated Learning for Personalised Deep Neural Networks in Edge
Computing" (TPDS 2021), Sec. 4 (papers/mtfl.md). Every cell runs as a resumable sweep
folder (:func:`analysis.docgen.run_variants`) under ``--out`` (default ``runs/mtfl``),
one folder per cell and learning rate, e.g. ``table2/fedavg-gamma_beta-W200-C0.5-lr0.1``:

* **Table 2** (``scenarios/mtfl/mnist_table2.yaml``): rounds until the average user-model
  accuracy (UA, ``ua_mean``) first reaches 97 %, for every optimisation strategy of
  :data:`STRATEGIES` × private BN values (none = FL; ``all`` = μ, σ, γ, β; ``mu_sigma``;
  ``gamma_beta``) × C ∈ {0.5, 1.0} (× W, ``--w``; default 200) × the learning rates of
  :data:`LR_GRID` × seeds. Runs stop at the target (``stop.target_ua``) or after 300
  rounds (the paper: 500). As the paper tuned the learning rate per cell, each cell shows
  the rate with the fewest mean rounds (fewest seeds not reaching the target first), as
  mean ± std over the seeds that reached it, beside the paper's number.
* **Table 3** (``scenarios/mtfl/mnist_noisy.yaml``): the same with 20 % noisy devices
  (Gaussian noise, std 3), rounds until the clean devices' mean UA (``ua_mean_clean``)
  reaches 97 %; FL(FedAvg) against MTFL(FedAvg) with private γ, β.
* **Fig. 5** (``scenarios/mtfl/mnist_fig5.yaml``): mean UA per round over 200 rounds for
  FL(FedAvg), MTFL(FedAvg, γβ), Per-FedAvg and pFedMe at the authors' published settings
  (:data:`FIG5`); ``docs/img/mtfl_fig5.png`` and a table at a few rounds.

Algorithms not (yet) in :data:`fedsim.algorithms.BUILTIN_ALGORITHMS` (FedAvg-Adam,
Per-FedAvg, pFedMe while they are being written) are skipped with a warning and shown as
not run, so the same command fills them in later; finished runs are reused, runs made from
an older version of a scenario file are refused (delete the folder). ``--quick`` runs two
cells per part, one seed, a few rounds and a 0.8 target, writing the doc and figure under
``--out`` (default ``runs/mtfl_quick``) so the shipped ones stay untouched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.docgen import Variant, generated_by, git_commit, rel_path, replace_block, run_variants  # noqa: E402
from fedsim.algorithms import BUILTIN_ALGORITHMS  # noqa: E402
from fedsim.analysis import (  # noqa: E402
    RunData,
    RunSet,
    plot_metric,
    rounds_to_target,
    save_figure,
    time_to_target,
    to_markdown,
)
from fedsim.api import check  # noqa: E402
from fedsim.config import load_scenario  # noqa: E402
from fedsim.errors import InputError  # noqa: E402
from fedsim.sweep import SweepError  # noqa: E402

SCENARIOS = ROOT / "scenarios/mtfl"
PARTS = ("table2", "table3", "fig5")
TITLE = "MTFL reproduction: Tables 2 and 3, Fig. 5 (MNIST)"
CELL = "cell"  # the grid key run_variants gives every run (its variant's label)

# --------------------------------------------------------------------------- the paper

#: Mills et al. (TPDS 2021) Tables 2 and 3 (papers/mtfl.md, Sec. 4.2): communication rounds
#: to the target average UA (97 % MNIST, 65 % CIFAR-10; Table 3: of the non-noisy clients),
#: 5 seeds; "X": not within 500 rounds. Columns in the paper's order: private values none
#: (FL), (μ, σ, γ, β), (μ, σ), (γ, β); within each W = 200 C = 0.5, 1.0, W = 400 C = 0.5, 1.0.
PAPER_TEXT = {
    ("table2", "mnist"): {
        "fedavg": "99 102 107 110 85 58 101 68 X X X X 29 21 34 26",
        "fedadam": "85 69 88 65 56 37 75 77 109 90 194 262 31 25 31 27",
        "fedavg_adam": "44 49 40 50 17 41 19 32 131 151 170 198 9 9 10 9",
    },
    ("table2", "cifar10"): {
        "fedavg": "139 138 171 164 49 33 55 36 231 280 258 266 37 24 45 30",
        "fedadam": "105 90 83 80 21 14 22 16 67 45 48 38 24 14 25 16",
        "fedavg_adam": "57 43 36 31 11 9 14 8 82 79 62 63 10 7 11 8",
    },
    ("table3", "mnist"): {
        "fedavg": "276 X 290 X 115 76 144 144 85 58 102 68 50 36 65 48",
        "fedadam": "X X X X 76 47 110 89 56 37 75 77 43 33 46 53",
        "fedavg_adam": "133 260 191 X 20 16 24 27 17 41 19 32 12 8 15 40",
    },
    ("table3", "cifar10"): {
        "fedavg": "148 208 202 250 47 32 52 35 239 186 260 88 36 24 43 28",
        "fedadam": "159 91 92 93 21 14 21 15 74 49 51 42 34 16 21 14",
        "fedavg_adam": "193 X X X 14 10 16 9 103 111 67 74 12 8 13 9",
    },
}
PRIVATE = ("none", "all", "mu_sigma", "gamma_beta")
PRIVATE_LABEL = {"none": "none (FL)", "all": "μ, σ, γ, β", "mu_sigma": "μ, σ", "gamma_beta": "γ, β"}
PAPER_COLUMNS = [(p, w, c) for p in PRIVATE for w in (200, 400) for c in (0.5, 1.0)]


def paper_value(table: str, dataset: str, strategy: str, private: str, w: int, c: float) -> str:
    """Return the paper's entry (rounds, or ``X``) for one cell of Table 2 or 3 (``–``: none)."""
    row = PAPER_TEXT[(table, dataset)].get(strategy)
    if row is None or (private, w, c) not in PAPER_COLUMNS:
        return "–"
    return row.split()[PAPER_COLUMNS.index((private, w, c))]


# --------------------------------------------------------------------------- the cells

#: Optimisation strategies of Tables 2-3: fedsim algorithm -> the paper's name.
STRATEGIES = {"fedavg": "FedAvg", "fedadam": "FedAdam", "fedavg_adam": "FedAvg-Adam"}
#: Learning rates tried per strategy (the best per cell is shown). FedAvg: the authors'
#: two published rates (0.1, their Table 2 example; 0.3, their Fig. 5 setting); FedAdam:
#: client lr 0.1 or 0.3 with their published server lr 0.01 (β1 0.9, β2 0.999, ε 1e-4, the
#: defaults); FedAvg-Adam: device Adam lr 0.001 or their published 0.003 (ε 1e-7).
LR_GRID: dict[str, tuple[dict[str, float], ...]] = {
    "fedavg": ({"lr": 0.1}, {"lr": 0.3}),
    "fedadam": ({"lr": 0.1, "server_lr": 0.01}, {"lr": 0.3, "server_lr": 0.01}),
    "fedavg_adam": (
        {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
        {"lr": 0.003, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
    ),
}
#: Fig. 5 (MNIST, W = 200): scheme -> C -> the ``algorithm`` section (the authors' published
#: settings, mtfl-settings.md). Per-FedAvg: α, β (first-order); pFedMe: lr = η,
#: lam = λ, one inner step, personal_lr at its default (the authors give none); all at
#: E = 1, B = 20, the paper's equal number of local steps.
FIG5: dict[str, dict[float, str]] = {
    "FL(FedAvg)": {
        c: "{use: fedavg, params: {lr: 0.3, local_epochs: 1, batch_size: 20, private: none}}"
        for c in (0.5, 1.0)
    },
    "MTFL(FedAvg, γβ)": {
        c: "{use: fedavg, params: {lr: 0.3, local_epochs: 1, batch_size: 20, private: gamma_beta}}"
        for c in (0.5, 1.0)
    },
    "Per-FedAvg": {
        0.5: "{use: per_fedavg, params: {alpha: 0.1, beta: 0.3, local_epochs: 1, batch_size: 20}}",
        1.0: "{use: per_fedavg, params: {alpha: 0.03, beta: 0.3, local_epochs: 1, batch_size: 20}}",
    },
    "pFedMe": {
        0.5: "{use: pfedme, params: {lr: 0.1, lam: 1.0, local_epochs: 1, batch_size: 20}}",
        1.0: "{use: pfedme, params: {lr: 0.03, lam: 3.0, local_epochs: 1, batch_size: 20}}",
    },
}
FIG5_ROUNDS = (10, 25, 50, 60, 100, 200)  # rounds of the Fig. 5 table (60: the runs here)


@dataclass(frozen=True)
class Cell:
    """One configuration of a table or of the figure, run at one or more learning rates."""

    part: str  # table2 | table3 | fig5
    algorithm: str  # fedsim algorithm name
    scheme: str  # row label (strategy or Fig. 5 scheme)
    private: str
    w: int
    c: float
    options: tuple[tuple[str, tuple[str, ...]], ...]  # (lr tag, --set items) per option

    @property
    def name(self) -> str:
        """Return the folder-safe name of the cell (without its learning rate)."""
        return f"{self.algorithm}-{self.private}-W{self.w}-C{self.c:.1f}"


def _w_sets(w: int) -> tuple[str, ...]:
    half = w // 2  # the scenarios' two device groups (RPi 2B, RPi 3B)
    return (
        f"topology.edges.0.devices.0.count={half}",
        f"topology.edges.0.devices.1.count={w - half}",
    )


def _lr_tag(params: dict[str, float]) -> str:
    short = {"lr": "lr", "server_lr": "slr"}
    return "_".join(f"{short[k]}{v:g}" for k, v in params.items() if k in short)


@dataclass(frozen=True)
class Setting:
    """How much to run."""

    seeds: int = 3
    ws: tuple[int, ...] = (200,)
    cs: tuple[float, ...] = (0.5, 1.0)
    max_rounds: int | None = None  # None: the scenarios'
    target: float | None = None  # None: the scenarios' (0.97)
    quick: bool = False
    sets: tuple[str, ...] = field(default=())
    rate_from_c05: bool = False  # C = 1.0 cells run only the rate that won at C = 0.5


QUICK = Setting(seeds=1, max_rounds=8, target=0.8, quick=True)


def table_cells(part: str, setting: Setting) -> list[Cell]:
    """Return the cells of Table 2 or Table 3 (``--quick``: two of them, one rate each)."""
    cells = []
    privates = PRIVATE if part == "table2" else ("none", "gamma_beta")
    strategies = list(STRATEGIES) if part == "table2" else ["fedavg"]
    for alg in strategies:
        for private in privates:
            for w in setting.ws:
                for c in setting.cs:
                    options = []
                    for params in LR_GRID[alg]:
                        sets = (
                            f"algorithm.use={alg}", f"algorithm.params.private={private}",
                            f"rounds.participation={c:.1f}", *_w_sets(w),
                            *(f"algorithm.params.{k}={v!r}" for k, v in params.items()),
                        )  # fmt: skip
                        options.append((_lr_tag(params), sets))
                    cells.append(Cell(part, alg, STRATEGIES[alg], private, w, c, tuple(options)))
    if setting.quick:  # FL and MTFL(γβ) FedAvg, at C = 0.5 and (Table 2) 1.0, lr 0.3
        last_c = setting.cs[-1] if part == "table2" else setting.cs[0]
        keep = {("none", setting.cs[0]), ("gamma_beta", last_c)}
        cells = [
            replace(x, options=x.options[-1:])
            for x in cells
            if x.algorithm == "fedavg" and (x.private, x.c) in keep and x.w == setting.ws[0]
        ]
    return cells


def fig5_cells(setting: Setting) -> list[Cell]:
    """Return the cells of Fig. 5 (``--quick``: FL and MTFL(γβ) at the first C)."""
    cells = []
    for scheme, by_c in FIG5.items():
        for w in setting.ws:
            for c in setting.cs:
                spec = yaml.safe_load(by_c[c])
                sets = (f"algorithm={by_c[c]}", f"rounds.participation={c:.1f}", *_w_sets(w))
                private = str(spec["params"].get("private", "none"))
                alg = str(spec["use"])
                cells.append(Cell("fig5", alg, scheme, private, w, c, (("paper", sets),)))
    if setting.quick:
        cells = [x for x in cells if x.algorithm == "fedavg" and x.c == setting.cs[0]]
    return cells


# --------------------------------------------------------------------------- running


def runnable(cells: Sequence[Cell]) -> tuple[list[Cell], list[str]]:
    """Split off the cells whose algorithm fedsim does not have yet; return them and warnings."""
    ok = [x for x in cells if x.algorithm in BUILTIN_ALGORITHMS]
    missing = sorted({x.algorithm for x in cells} - set(BUILTIN_ALGORITHMS))
    return ok, [
        f"warning: algorithm {a!r} is not in fedsim.algorithms.BUILTIN_ALGORITHMS yet; its "
        "cells are skipped (run this again once it is)"
        for a in missing
    ]


def scenario_of(part: str) -> Path:
    """Return the scenario file a part runs."""
    stem = {"table2": "mnist_table2", "table3": "mnist_noisy", "fig5": "mnist_fig5"}[part]
    return SCENARIOS / f"{stem}.yaml"


def run_cells(
    cells: Sequence[Cell], out: Path, setting: Setting, parallel: int
) -> dict[tuple[str, str], list[RunData]]:
    """Run every cell at every learning rate on the same seeds; return runs by (cell, lr tag)."""
    common = list(setting.sets)
    if setting.max_rounds is not None:
        common.append(f"stop.max_rounds={setting.max_rounds}")
    variants, keys = [], {}
    for cell in cells:
        target = []
        if setting.target is not None and cell.part != "fig5":
            target = [f"stop.target_ua={setting.target!r}"]
        for tag, sets in cell.options:
            label = f"{cell.part}/{cell.name}-{tag}"
            keys[label] = (cell.name, tag)
            variants.append(
                Variant(label, scenario_of(cell.part), (*common, *target, *sets), label)
            )
    done: list[str] = []

    def progress(run: RunData) -> None:
        label = run.params[CELL]
        if label not in done:
            done.append(label)
            print(f"[{len(done)}/{len(variants)}] {label}", file=sys.stderr, flush=True)

    rs = run_variants(variants, out, setting.seeds, CELL, parallel, progress)
    by: dict[tuple[str, str], list[RunData]] = {}
    for run in rs.runs:
        by.setdefault(keys[run.params[CELL]], []).append(run)
    return by


# --------------------------------------------------------------------------- tables


def rate_of_c05(
    cell: Cell, cells: Sequence[Cell], by: dict[tuple[str, str], list[RunData]], part: str
) -> Cell:
    """Return ``cell`` with only the option that won its C = 0.5 twin (all if none ran)."""
    metric = "ua_mean" if part == "table2" else "ua_mean_clean"
    same = (cell.part, cell.algorithm, cell.private, cell.w)
    twin = next(
        (x for x in cells if x.c == 0.5 and (x.part, x.algorithm, x.private, x.w) == same), None
    )
    if twin is None:
        return cell
    stats = {tag: option_stats(by[(twin.name, tag)], metric) for tag, _ in twin.options
             if by.get((twin.name, tag))}  # fmt: skip
    best = best_option(stats)
    kept = tuple(o for o in cell.options if o[0] == best)
    return replace(cell, options=kept or cell.options)


def _target_of(runs: Sequence[RunData]) -> tuple[float, int]:
    stop = runs[0].scenario["stop"]
    return float(stop["target_ua"]), int(stop["max_rounds"])


def option_stats(runs: Sequence[RunData], metric: str) -> dict[str, float]:
    """Return seeds, seeds reaching the target, and mean/std of rounds and virtual time."""
    target, _ = _target_of(runs)
    rounds = [rounds_to_target(r, metric, target) for r in runs]
    times = [time_to_target(r, metric, target) for r in runs]
    hit = np.array([x for x in rounds if x is not None], dtype=float)
    secs = np.array([x for x in times if x is not None], dtype=float)
    return {
        "n": len(runs),
        "reached": len(hit),
        "mean": float(hit.mean()) if len(hit) else math.nan,
        "std": float(hit.std(ddof=1)) if len(hit) > 1 else math.nan,
        "time_s": float(secs.mean()) if len(secs) else math.nan,
    }


def best_option(stats: dict[str, dict[str, float]]) -> str | None:
    """Return the option with the fewest seeds missing the target, then the fewest rounds."""
    tried = {k: s for k, s in stats.items() if s["n"] > 0}
    if not tried:
        return None
    return min(
        tried,
        key=lambda k: (
            tried[k]["n"] - tried[k]["reached"],
            tried[k]["mean"] if tried[k]["reached"] else math.inf,
        ),
    )


def fmt_rounds(s: dict[str, float]) -> str:
    """Format rounds to target as mean ± std over the seeds reaching it, plus the misses."""
    n, k = int(s["n"]), int(s["reached"])
    if k == 0:
        return f"X (0/{n})"
    text = f"{s['mean']:.0f}" + (f" ± {s['std']:.0f}" if k > 1 else "")
    return text + (f" ({n - k}/{n} X)" if k < n else "")


def cell_table(
    part: str, cells: Sequence[Cell], by: dict[tuple[str, str], list[RunData]], metric: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the comparison table (best rate per cell beside the paper) and every rate's row."""
    rows: dict[tuple[str, str, int], dict[str, str]] = {}
    detail = []
    for cell in cells:
        key = (cell.scheme, PRIVATE_LABEL[cell.private], cell.w)
        row = rows.setdefault(key, {"strategy": key[0], "private": key[1], "W": str(cell.w)})
        stats = {
            tag: option_stats(by[(cell.name, tag)], metric)
            for tag, _ in cell.options
            if by.get((cell.name, tag))
        }
        best = best_option(stats)
        col = f"C = {cell.c:.1f}"
        paper = paper_value(part, "mnist", cell.algorithm, cell.private, cell.w, cell.c)
        row[f"{col}: ours"] = "not run" if best is None else fmt_rounds(stats[best])
        row[f"{col}: paper"] = paper
        row[f"{col}: lr"] = "–" if best is None else best
        for tag, s in stats.items():
            detail.append(
                {
                    "strategy": cell.scheme, "private": PRIVATE_LABEL[cell.private],
                    "W": cell.w, "C": f"{cell.c:.1f}", "rate": tag, "rounds": fmt_rounds(s),
                    "virtual time to target (min)": (
                        "–" if math.isnan(s["time_s"]) else f"{s['time_s'] / 60:.1f}"
                    ),
                    "best": "◀" if tag == best else "",
                }
            )  # fmt: skip
    return pd.DataFrame(list(rows.values())).fillna("–"), pd.DataFrame(detail)


# --------------------------------------------------------------------------- Fig. 5


def fig5_runset(cells: Sequence[Cell], by: dict[tuple[str, str], list[RunData]]) -> RunSet:
    """Return the Fig. 5 runs keyed by ``scheme`` and ``C`` (seeds of one configuration)."""
    runs = []
    for cell in cells:
        for run in by.get((cell.name, "paper"), []):
            run.params = {"scheme": cell.scheme, "C": f"{cell.c:.1f}"}
            runs.append(run)
    return RunSet(runs=runs, grid_keys=["scheme", "C"])


def plot_fig5(rs: RunSet) -> Figure:
    """Return mean UA against round, one panel per C, a 95 % band over seeds."""
    cs = sorted({r.params["C"] for r in rs.runs}, key=float)
    fig = Figure(figsize=(5.2 * max(len(cs), 1), 4.0), layout="constrained")
    axes = fig.subplots(1, max(len(cs), 1), squeeze=False)[0]
    for ax, c in zip(axes, cs, strict=False):
        sub = RunSet(runs=[r for r in rs.runs if r.params["C"] == c], grid_keys=["scheme"])
        plot_metric(sub, "ua_mean", x="round", by=["scheme"], band="ci", ax=ax)
        for line in ax.get_lines():
            line.set_label(str(line.get_label()).replace("scheme=", ""))
        ax.set_ylim(0.5, 1.0)
        ax.legend(fontsize="small", loc="lower right")
        w = {sum(g["count"] for e in r.scenario["topology"]["edges"] for g in e["devices"])
             for r in sub.runs}  # fmt: skip
        ax.set_title(f"MNIST, W = {', '.join(map(str, sorted(w)))}, C = {c}")
    return fig


def fig5_table(rs: RunSet) -> pd.DataFrame:
    """Return mean ± std UA over seeds after a few rounds, per scheme and C."""
    horizon = max((len(r.rounds) for r in rs.runs), default=0)
    points = [n for n in FIG5_ROUNDS if n <= horizon] or ([horizon] if horizon else [])
    rows = []
    groups: dict[tuple[str, str], list[RunData]] = {}
    for r in rs.runs:
        groups.setdefault((r.params["scheme"], r.params["C"]), []).append(r)
    for (scheme, c), runs in groups.items():
        row = {"scheme": scheme, "C": c}
        for n in points:
            ua = np.array(
                [float(r.rounds["ua_mean"].iloc[n - 1]) for r in runs if len(r.rounds) >= n]
            )
            row[f"UA after {n}"] = (
                "n/a"
                if not len(ua)
                else f"{100 * ua.mean():.1f} %"
                + (f" ± {100 * ua.std(ddof=1):.1f}" if len(ua) > 1 else "")
            )
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the doc


def wall_per_round(runs: Sequence[RunData]) -> dict[str, float]:
    """Return mean wall-clock seconds per round (``timings.json``) by participation C."""
    out: dict[str, list[float]] = {}
    for r in runs:
        path = r.run_dir / "timings.json"
        if not path.is_file():
            continue
        per = json.loads(path.read_text()).get("wall_s_per_round") or []
        c = f"{float(r.scenario['rounds']['participation']):.1f}"
        out.setdefault(c, []).extend(float(x) for x in per)
    return {c: float(np.mean(v)) for c, v in sorted(out.items()) if v}


def provenance(runs: Sequence[RunData], command: str, out: Path, scenario: Path) -> list[str]:
    """Return the lines naming the command, the commit, the scenario and the runs' cost."""
    run0 = runs[0] if runs else None
    version = run0.meta.get("fedsim_version", "?") if run0 is not None else "?"
    seeds = sorted({r.seed for r in runs})
    wall = ", ".join(f"{s:.2f} s at C = {c}" for c, s in wall_per_round(runs).items())
    return [
        *generated_by(command),
        f"fedsim {version}, {git_commit(ROOT)}; scenario `{rel_path(scenario, ROOT)}`; "
        f"{len(runs)} runs (seeds {', '.join(map(str, seeds)) or '–'}) in `{rel_path(out, ROOT)}`"
        + (f"; wall clock per round (inline, 1 torch thread): {wall}." if wall else "."),
        "",
    ]


def table_block(
    part: str, cells: Sequence[Cell], skipped: Sequence[Cell], by: dict, command: str, out: Path
) -> str:
    """Return the generated block of Table 2 or Table 3."""
    metric = "ua_mean" if part == "table2" else "ua_mean_clean"
    runs = [r for rs in by.values() for r in rs]
    table, detail = cell_table(part, [*cells, *skipped], by, metric)
    target, cap = _target_of(runs) if runs else (0.97, 300)
    what = "average UA" if part == "table2" else "average UA of the clean devices"
    lines = provenance(runs, command, out, scenario_of(part))
    lines += [
        f"Rounds until the {what} (`{metric}`) first reaches {target:g}: ours (mean ± std "
        "over the seeds that reached it; `(k/n X)`: k of n seeds did not within "
        f"{cap} rounds; `X (0/n)`: none did) at the learning rate (`lr`, client; `slr`, "
        "server) with the fewest mean rounds, beside the paper's MNIST 2NN number (5 seeds; "
        "X: not within 500 rounds). `not run`: the algorithm is not in fedsim yet.",
        "",
        to_markdown(table),
        "Every learning rate tried (◀: the one shown above; virtual time on the scenario's "
        "RPi 2B/3B WiFi testbed, mean over the seeds that reached the target):",
        "",
        to_markdown(detail) if len(detail) else "(no runs)\n",
    ]
    return "\n".join(lines)


def fig5_block(rs: RunSet, img: Path, doc: Path, command: str, out: Path) -> str:
    """Return the generated block of Fig. 5 (the figure linked relative to ``doc``)."""
    lines = provenance(rs.runs, command, out, scenario_of("fig5"))
    link = Path(os.path.relpath(img.resolve(), doc.resolve().parent)).as_posix()
    lines += [
        f"![Mean UA per round, MNIST]({link})" if rs.runs else "(no runs)",
        "",
        "Mean UA over the seeds after n rounds (± std over seeds). The paper (Fig. 5, MNIST, "
        "W = 200) shows MTFL(FedAvg, γβ) highest throughout, Per-FedAvg and pFedMe above "
        "FL(FedAvg).",
        "",
        to_markdown(fig5_table(rs)) if rs.runs else "(no runs)\n",
    ]
    return "\n".join(lines)


def markers(part: str) -> tuple[str, str]:
    """Return the begin and end marker lines of a part's generated block."""
    return (
        f"<!-- BEGIN {part} generated by analysis/make_mtfl_docs.py; do not edit by hand -->",
        f"<!-- END {part} generated by analysis/make_mtfl_docs.py -->",
    )


def new_doc(doc: Path) -> None:
    """Write a doc holding the title and the three empty generated blocks."""
    heads = {"table2": "Table 2", "table3": "Table 3: noisy clients", "fig5": "Fig. 5"}
    parts = [f"# {TITLE}\n"]
    for part in PARTS:
        begin, end = markers(part)
        parts.append(f"## {heads[part]}\n\n{begin}\n{end}\n")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(parts))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for, print their blocks and write them into the doc."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=PARTS, action="append", help="a part (repeatable)")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--w", type=int, nargs="+", default=[200], help="devices W: 200 400")
    parser.add_argument(
        "--c", type=float, nargs="+", default=None, help="participation C: 0.5 1.0 (default both)"
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--quick", action="store_true", help="2 cells, 1 seed, 8 rounds")
    parser.add_argument("--out", type=Path, default=None, help="default runs/mtfl")
    parser.add_argument("--img", type=Path, default=None, help="default docs/img")
    parser.add_argument("--doc", type=Path, default=None, help="default docs/mtfl_reproduction.md")
    parser.add_argument("--no-doc", action="store_true", help="leave the doc alone")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value (all)")
    parser.add_argument(
        "--rate-from-c05",
        action="store_true",
        help="C = 1.0 cells run only the rate that won the same cell at C = 0.5 (half the runs)",
    )
    args = parser.parse_args(argv)

    base = QUICK if args.quick else Setting()
    bad_w = [w for w in args.w if w <= 0 or w % 2]
    if bad_w:
        parser.error(f"--w: expected even device counts (got {bad_w})")
    cs = tuple(args.c or base.cs)
    if any(c not in (0.5, 1.0) for c in cs):
        parser.error(f"--c: expected the paper's 0.5 and/or 1.0 (got {list(cs)})")
    setting = replace(
        base,
        seeds=args.seeds or base.seeds,
        ws=tuple(args.w),
        cs=cs,
        sets=tuple(args.sets),
        rate_from_c05=args.rate_from_c05,
    )
    out = args.out or ROOT / ("runs/mtfl_quick" if args.quick else "runs/mtfl")
    img = (args.img or (out / "img" if args.quick else ROOT / "docs/img")) / "mtfl_fig5.png"
    doc = args.doc or (
        out / "mtfl_reproduction.md" if args.quick else ROOT / "docs/mtfl_reproduction.md"
    )
    given = list(sys.argv[1:] if argv is None else argv)
    command = f"python analysis/make_mtfl_docs.py {shlex.join(given)}".rstrip()
    # the runs are `python -m fedsim` subprocesses: let them import this checkout's fedsim
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    try:
        parts = args.only or list(PARTS)
        blocks = run_parts(parts, setting, out, img, doc, args.parallel, command)
    except (InputError, SweepError) as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    if not args.no_doc:
        if not doc.is_file():
            new_doc(doc)
        for part, block in blocks.items():
            begin, end = markers(part)
            replace_block(doc, begin, end, block)
        print(f"updated {rel_path(doc, ROOT)}", file=sys.stderr)
    return 0


def run_parts(
    parts: Sequence[str],
    setting: Setting,
    out: Path,
    img: Path,
    doc: Path,
    parallel: int,
    command: str,
) -> dict[str, str]:
    """Run the parts (skipping algorithms fedsim lacks); print and return their blocks."""
    check(load_scenario(scenario_of(parts[0])), str(scenario_of(parts[0])))  # data there?
    blocks: dict[str, str] = {}
    for part in parts:
        cells = fig5_cells(setting) if part == "fig5" else table_cells(part, setting)
        ok, warnings = runnable(cells)
        for w in warnings:
            print(w, file=sys.stderr)
        skipped = [x for x in cells if x not in ok]
        if setting.rate_from_c05 and part != "fig5":
            by = run_cells([x for x in ok if x.c == 0.5], out, setting, parallel)
            ok = [x if x.c == 0.5 else rate_of_c05(x, ok, by, part) for x in ok]
            by |= run_cells([x for x in ok if x.c != 0.5], out, setting, parallel)
        else:
            by = run_cells(ok, out, setting, parallel)
        if part == "fig5":
            rs = fig5_runset(ok, by)
            if rs.runs:
                save_figure(plot_fig5(rs), img, formats=("png",))
            blocks[part] = fig5_block(rs, img, doc, command, out)
        else:
            blocks[part] = table_block(part, ok, skipped, by, command, out)
        print(f"\n## {part}\n\n{blocks[part]}")
    return blocks


if __name__ == "__main__":
    raise SystemExit(main())
