"""PerFit's case study: the figures (UA over devices per method, mean UA per round)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from analysis.perfit_methods import KEY, MODEL_SETS, is_other, model_of
from fedsim.analysis import RunData, RunSet, plot_metric


def plot_boxplot(per_device: pd.DataFrame, order: Sequence[str]) -> Figure:
    """Return the UA box plot over devices per method (seeds pooled; PerFit Fig. 7).

    Whiskers span min to max; the green triangle is the mean.
    """
    methods = [m for m in order if m in set(per_device["method"])]
    data = [per_device.loc[per_device["method"] == m, "accuracy"].to_numpy(float) for m in methods]
    fig = Figure(figsize=(max(6.0, 0.75 * len(methods) + 1.5), 4.2), layout="constrained")
    ax = fig.subplots()
    if methods:
        ax.boxplot(data, tick_labels=methods, showmeans=True, whis=(0, 100))
    ax.set_ylabel("user-model accuracy (test split of each device)")
    ax.tick_params(axis="x", labelrotation=40)
    ax.grid(axis="y", alpha=0.3)
    seeds = per_device["seed"].nunique() if len(per_device) else 0
    ax.set_title(f"UA over the 30 devices, {seeds} seed(s) pooled (synthetic HAR)")
    return fig


def plot_rounds(runs: Sequence[RunData]) -> Figure:
    """Return mean UA per round of the federated methods.

    One panel per model (the methods whose devices all run it) and one for FD-1, FD-2 and
    MOCHA (FD-CNN is in the CNN's).
    """
    panels = [(f"{m}: mean UA per round", m) for m in MODEL_SETS]
    if any(is_other(str(r.params[KEY])) and not model_of(str(r.params[KEY])) for r in runs):
        panels.append(("FD-1, FD-2 (mixed models), MOCHA: mean UA per round", ""))
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, model) in zip(axes, panels, strict=True):
        sub = [r for r in runs if model_of(str(r.params[KEY])) == model]
        if sub:
            plot_metric(RunSet(runs=sub, grid_keys=[KEY]), "ua_mean", x="round", ax=ax)
            for line in ax.get_lines():
                line.set_label(str(line.get_label()).replace(f"{KEY}=", ""))
            ax.legend(fontsize="small", loc="lower right")
        ax.set_title(title)
    return fig
