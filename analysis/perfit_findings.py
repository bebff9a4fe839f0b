"""PerFit's case study: the model-size arithmetic and which of PerFit's findings agree.

Nothing is run: the sizes come from the runs' ``run.json`` and from building fedsim's
models; the findings from the UA statistics and bytes of :mod:`analysis.perfit_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from analysis.perfit_methods import (
    FEDERATED,
    KEY,
    MODEL_NAME,
    MODEL_SETS,
    MODEL_VIEW,
    NUM_CLASSES,
    OTHERS,
    PAPER_CLASSES,
    PAPER_FD_VALUES,
    PAPER_PARAMS,
    fed_label,
    is_other,
    model_of,
)
from analysis.perfit_tables import pct
from fedsim.analysis import RunData
from fedsim.models import build_model

# --------------------------------------------------------------------------- model sizes


def mlp3_params(features: int, classes: int) -> int:
    """Return the parameter count of PerFit's 3NN (features-400-100-classes)."""
    return 400 * features + 400 + 400 * 100 + 100 + 100 * classes + classes


def cnn_params(channels: int, flat: int, classes: int, kernel: int = 9) -> int:
    """Return the parameter count of PerFit's CNN (convolutions 32, 16, 8, then 128 units).

    ``kernel`` is the number of weights per filter and input channel (9: 3 x 3, 3: width-3
    1-D); ``flat`` is the features entering the 128-unit layer.
    """
    convs = (channels * 32 + 32 * 16 + 16 * 8) * kernel + 32 + 16 + 8
    return convs + flat * 128 + 128 + 128 * classes + classes


def paper_cnn_inputs(max_channels: int = 64) -> list[tuple[int, int]]:
    """Return the (input channels, features into the 128 layer) giving PerFit's 33,698.

    Assumes 3 x 3 2-D convolutions with bias, 10 classes, the flat size a multiple of the
    last convolution's 8 channels.
    """
    out = []
    for c in range(1, max_channels + 1):
        rest = PAPER_PARAMS["CNN"] - cnn_params(c, 0, PAPER_CLASSES)
        if rest > 0 and rest % 128 == 0:
            flat = rest // 128
            if flat % 8 == 0:
                out.append((c, flat))
    return out


def built_params(model: str, shape: tuple[int, ...], classes: int) -> int:
    """Return the parameter count of fedsim's ``model`` built for ``shape`` and ``classes``."""
    net = build_model(MODEL_NAME[model], shape, classes)
    return sum(p.numel() for p in net.parameters())


def sizes_lines(runs: Sequence[RunData]) -> list[str]:
    """Return the model-size section: ours (from the runs) against PerFit's, and why."""
    measured: dict[str, int] = {}
    for run in runs:
        model = model_of(str(run.params[KEY]))
        n = run.meta.get("model", {}).get("num_params")
        if n is not None and model and not is_other(str(run.params[KEY])):
            measured[model] = int(n)
    f_paper = (PAPER_PARAMS["3NN"] - 400 - 40_100 - 101 * PAPER_CLASSES) // 400
    lines = [
        "| model | input here | parameters here (run.json) | PerFit's parameters |",
        "|---|---|---|---|",
    ]
    for model in MODEL_SETS:
        n = measured.get(model)
        lines.append(
            f"| {model} | {MODEL_VIEW[model]}, {NUM_CLASSES} classes | "
            f"{'n/a' if n is None else f'{n:,}'} | {PAPER_PARAMS[model]:,} |"
        )
    sols = paper_cnn_inputs()
    sol_text = "; ".join(f"{c} channels and {f} features ({f // 8} positions x 8)" for c, f in sols)
    check_3nn = built_params("3NN", (f_paper,), PAPER_CLASSES)
    check_cnn = built_params("CNN", (3, 20, 20), PAPER_CLASSES)
    lines += [
        "",
        "The counts differ because the inputs differ, not the layers. The 3NN's parameters "
        "are 400 F + 400 + 40,100 + 101 C for F input features and C classes; PerFit's "
        f"521,510 with C = 10 gives F = (521,510 − 400 − 40,100 − 1,010) / 400 = {f_paper:,} "
        f"input features (fedsim's `perfit_3nn` on {f_paper:,} features and 10 classes: "
        f"{check_3nn:,} parameters). Here F = 561 and C = {NUM_CLASSES}: "
        f"400 × 561 + 400 + 40,100 + 101 × {NUM_CLASSES} = "
        f"{mlp3_params(561, NUM_CLASSES):,}.",
        "",
        "PerFit's CNN has 3 × 3 convolutions (32, 16, 8 channels), 128 hidden units and 10 "
        "outputs; its input is not given. Its parameters are 288 c + 32 + 4,624 + 1,160 + 128 f "
        "+ 128 + 1,290 for c input channels and f features into the 128-unit layer, so "
        "33,698 needs 9 c + 4 f = 827 with f a multiple of 8: "
        f"{sol_text}. The first is a 3-channel input whose two 2 × 2 poolings leave 5 × 5 "
        "positions (20..23 × 20..23 with same-padding convolutions, or 4..7 × 100..103); "
        "a 3 × 20 × 20 input has 1,200 values, the 3NN's input size above, so one "
        "reshaped 1,200-value window fits both counts (an inference; PerFit does not say). "
        f"fedsim's `perfit_cnn` on (3, 20, 20) with 10 classes has {check_cnn:,} "
        "parameters. Here the CNN reads (9, 128) with width-3 1-D convolutions: "
        f"96 × 9 + 32 + 1,552 + 392 + 128 × 256 + 128 + 129 × {NUM_CLASSES} = "
        f"{cnn_params(9, 8 * 32, NUM_CLASSES, kernel=3):,} (8 channels × 32 positions = 256 "
        "features into the 128-unit layer).",
    ]
    return lines


# --------------------------------------------------------------------------- findings


def _diff(stats: Mapping[str, Mapping[str, float]], a: str, b: str) -> float:
    """Return ``a``'s mean UA minus ``b``'s in percentage points (NaN if either is missing)."""
    if a not in stats or b not in stats:
        return math.nan
    return 100 * (stats[a]["mean"] - stats[b]["mean"])


def findings(stats: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Return one bullet per PerFit finding: what we measured and whether it agrees."""

    def verdict(ok: bool | None) -> str:
        return "n/a (not run)" if ok is None else ("agrees" if ok else "does not agree")

    def cmp(a: str, b: str) -> tuple[float, bool | None]:
        d = _diff(stats, a, b)
        return d, (None if math.isnan(d) else d > 0)

    lines = []
    for model in MODEL_SETS:
        fl = f"FL-{model}"
        paper = {
            "FTL": "PerFit: FTL-3NN +11.12 over FL-3NN" if model == "3NN" else
                   "PerFit: FTL-CNN above 90 %, FL-CNN 85.22 %",
            "FTL (all layers)": "PerFit fine-tunes, layers not said",
            "FedPer": "PerFit describes FedPer (Sec. IV-B) but does not run it",
        }  # fmt: skip
        for scheme in ("FTL", "FTL (all layers)", "FedPer"):
            other = fed_label(scheme, model)
            d, ok = cmp(other, fl)
            if math.isnan(d):
                continue
            lines.append(
                f"* **{other} above {fl}** (personalised above global FL): "
                f"{pct(stats[other]['mean'])} against {pct(stats[fl]['mean'])}, "
                f"{d:+.2f} points ({paper[scheme]}): {verdict(ok)}."
            )
        lo = {m: stats[m]["min"] for m in (fed_label(s, model) for s in FEDERATED) if m in stats}
        if fl in lo and len(lo) > 1:
            fl_lo = lo.pop(fl)
            above = [m for m, v in lo.items() if v > fl_lo]
            below = [m for m in lo if m not in above]
            if not above:
                said = verdict(False)
            elif not below:
                said = f"{verdict(True)} (every personalised method)"
            else:
                said = f"{verdict(True)} for {', '.join(above)}, not for {', '.join(below)}"
            lines.append(
                f"* **Personalisation lifts the worst devices ({model})**: the lowest device "
                f"UA is {pct(fl_lo)} under {fl}; "
                + ", ".join(f"{m} {pct(v)}" for m, v in lo.items())
                + " (PerFit Fig. 7, CNN: some FL clients below 70 %, the personalised ones "
                f"in a narrow range): {said}."
            )
    classical = [m for m in ("SVM", "kNN", "RF") if m in stats]
    for net in (m for m in ("c3NN", "cCNN") if m in stats):
        if not classical:
            break
        below = [m for m in classical if stats[m]["mean"] >= stats[net]["mean"]]
        text = ", ".join(f"{m} {pct(stats[m]['mean'])}" for m in classical)
        view = " (a different input: the classical learners read the engineered features)"
        lines.append(
            f"* **{net} above SVM, kNN, RF** (PerFit Fig. 6): {net} {pct(stats[net]['mean'])}; "
            f"{text}{view if net == 'cCNN' else ''}: "
            + (verdict(True) if not below else f"{verdict(False)}: not above {', '.join(below)}")
            + "."
        )
    for net, model in (("c3NN", "3NN"), ("cCNN", "CNN")):
        d, ok = cmp(net, f"FL-{model}")
        if not math.isnan(d):
            lines.append(
                f"* **FL below centralised ({model})**: {net} {pct(stats[net]['mean'])}, "
                f"FL-{model} {pct(stats[f'FL-{model}']['mean'])}, {net} − FL-{model} = "
                f"{d:+.2f} points (PerFit: FL 'slightly' below centralised, FL-CNN 'similar' "
                f"to cCNN, no number for c3NN or cCNN): {verdict(ok)} in direction."
            )
    return lines


def fd_findings(
    stats: Mapping[str, Mapping[str, float]], sent: Mapping[str, tuple[float, float, float]]
) -> list[str]:
    """Return one bullet per PerFit finding on FD (and what MOCHA measured).

    ``stats`` as :func:`analysis.perfit_tables.ua_stats` returns them (``mean``, ``min``,
    ``max``), ``sent`` as :func:`analysis.perfit_tables.bytes_per_round` (bytes up first).
    """

    def verdict(ok: bool) -> str:
        return "agrees" if ok else "does not agree"

    lines = []
    fds = [m for m in OTHERS if m.startswith("FD-") and m in sent]
    ftl = {m: sent[f"FTL-{m}"][0] for m in MODEL_SETS if f"FTL-{m}" in sent}
    if fds and len(ftl) == len(MODEL_SETS):
        ups = {m: sent[m][0] for m in fds}
        said = "; ".join(
            f"{', '.join(m for m in fds if ups[m] == up)} {up:,.0f} B "
            f"({up / 4:,.0f} float32 values)"
            for up in dict.fromkeys(ups.values())
        )
        worst = max(ups.values())
        ok = worst < 0.1 * ftl["3NN"] and worst < ftl["CNN"]
        lines.append(
            "* **FD's upload orders of magnitude below FTL's** (PerFit Fig. 8: FD's "
            f"{PAPER_FD_VALUES:,} values per device per round, "
            f"{PAPER_FD_VALUES / PAPER_PARAMS['3NN']:.4f} of FTL-3NN's "
            f"{PAPER_PARAMS['3NN']:,} and {PAPER_FD_VALUES / PAPER_PARAMS['CNN']:.4f} of "
            f"FTL-CNN's {PAPER_PARAMS['CNN']:,}): per device per round {said}, from "
            f"{NUM_CLASSES} class scores per public window here against PerFit's "
            f"{PAPER_CLASSES}; FTL-3NN {ftl['3NN']:,.0f} B, FTL-CNN {ftl['CNN']:,.0f} B; "
            f"FD's largest is {worst / ftl['3NN']:.4f} of FTL-3NN's "
            f"({math.log10(ftl['3NN'] / worst):.1f} orders of magnitude fewer) and "
            f"{worst / ftl['CNN']:.4f} of FTL-CNN's "
            f"({math.log10(ftl['CNN'] / worst):.1f}): {verdict(ok)}."
        )
    fl = {m: f"FL-{m}" for m in MODEL_SETS if f"FL-{m}" in stats}
    note = (
        "; FD runs `scenarios/perfit/fd.yaml`: its 3NN reads the inertial windows, and "
        "1,000 training windows are the public set"
    )
    for method in fds:
        if method not in stats:
            continue
        refs = [fl[model_of(method)]] if model_of(method) in fl else list(fl.values())
        if not refs:
            continue
        own = stats[method]["mean"]
        diffs = "; ".join(
            f"{r} {pct(stats[r]['mean'])}, {100 * (own - stats[r]['mean']):+.2f} points"
            for r in refs
        )
        paper = (
            "PerFit: FD-CNN +5.69 over FL-CNN" if method == "FD-CNN"
            else "PerFit: above 90 %, FL-CNN 85.22 %"
        )  # fmt: skip
        ok = all(own > stats[r]["mean"] for r in refs)
        lines.append(
            f"* **{method} above {' and '.join(refs)}** (personalised above global FL): "
            f"{pct(own)} against {diffs} ({paper}{note}): {verdict(ok)}."
        )
        note = ""  # said once
    if "FD-CNN" in stats and "FL-CNN" in stats:
        fd, gl = stats["FD-CNN"], stats["FL-CNN"]
        span_fd, span_fl = fd["max"] - fd["min"], gl["max"] - gl["min"]
        lines.append(
            "* **FD-CNN narrows the spread over devices** (PerFit Fig. 7: FD-CNN's "
            "'performance differences between different clients have also been narrowed' "
            f"against FL-CNN): device UA from {pct(fd['min'])} to {pct(fd['max'])} "
            f"(range {100 * span_fd:.2f} points) under FD-CNN, {pct(gl['min'])} to "
            f"{pct(gl['max'])} ({100 * span_fl:.2f} points) under FL-CNN: "
            f"{verdict(span_fd < span_fl)}."
        )
    high = [m for m in ("FTL-3NN", "FTL-CNN", "FD-1", "FD-2") if m in stats]
    if any(m in fds for m in high):
        below = [m for m in high if stats[m]["mean"] <= 0.9]
        lines.append(
            "* **Every personalised method above 90 %** (PerFit Fig. 8: FTL-3NN, FTL-CNN, "
            "FD-1 and FD-2; a level, on other data): "
            + ", ".join(f"{m} {pct(stats[m]['mean'])}" for m in high)
            + ": "
            + (verdict(True) if not below else f"{verdict(False)}: {', '.join(below)} not")
            + "."
        )
    if "MOCHA" in stats:
        mo = stats["MOCHA"]
        refs = [m for m in ("FL-3NN", "FTL-3NN", "FedPer-3NN") if m in stats]
        against = ", ".join(
            f"{m} {pct(stats[m]['mean'])} ({100 * (mo['mean'] - stats[m]['mean']):+.2f})"
            for m in refs
        )
        lines.append(
            f"* **MOCHA** (PerFit describes it, Sec. IV-C, and reports no number): mean UA "
            f"{pct(mo['mean'])}, lowest device {pct(mo['min'])}, with one logistic "
            "regression per device on the 561 engineered features"
            + (f"; the 3NN methods on the same features: {against} points" if against else "")
            + ". fedsim's MOCHA is the primal form with SGD as the local solver (the "
            "original solves each device's dual subproblem by coordinate ascent, SDCA, "
            "with the same communication; `fedsim/algorithms/mocha.py`)."
        )
    return lines
