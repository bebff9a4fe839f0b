"""Run the PerFit Fig. 5 sweep (K = 3, 5, 10, 30 of 30 devices) and write its doc figures.

Usage (from the repository root)::

    python analysis/make_k_sweep_docs.py [--seeds 3] [--parallel 2] [--out runs/perfit_k_sweep]

It runs (or resumes) the sweep with :func:`fedsim.sweep.run_sweep`, then writes
``docs/img/k_sweep_*.png`` and ``.svg``, ``docs/img/k_sweep_numbers.md`` (the tables and
the K = 30 / K = 3 round-time ratio, pasted into docs/analysis.md) and the HTML report
``<out>/report.html``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from matplotlib.figure import Figure  # noqa: E402

from analysis.docgen import rel_path  # noqa: E402
from fedsim.analysis import (  # noqa: E402
    load_sweep,
    plot_device_timeline,
    plot_metric,
    plot_time_breakdown,
    plot_ua_boxplot,
    save_figure,
    target_table,
    time_breakdown,
    time_breakdown_table,
    to_markdown,
    write_report,
)
from fedsim.sweep import run_sweep  # noqa: E402

KEY = "rounds.participants"
KS = ["3", "5", "10", "30"]


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write the figures; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios/perfit_k_sweep.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/perfit_k_sweep")
    parser.add_argument("--img", type=Path, default=ROOT / "docs/img")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument(
        "--name", default="k_sweep", help="prefix of the files written into --img (k_sweep)"
    )
    args = parser.parse_args(argv)

    run_sweep(args.scenario, {KEY: KS}, args.seeds, args.out, parallel=args.parallel)
    rs = load_sweep(args.out)
    img = args.img
    img.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_acc, ax_time = fig.subplots(1, 2)
    plot_metric(rs, "accuracy", x="round", ax=ax_acc)
    plot_metric(rs, "round_time_s", x="round", band="minmax", ax=ax_time)
    ax_acc.set_title("(a) test accuracy per round")
    ax_time.set_title("(b) virtual time per round")
    save_figure(fig, img / f"{args.name}_accuracy_and_round_time")
    save_figure(plot_metric(rs, "accuracy", x="time"), img / f"{args.name}_accuracy_vs_time")
    save_figure(plot_time_breakdown(rs), img / f"{args.name}_time_breakdown")
    save_figure(plot_ua_boxplot(rs), img / f"{args.name}_ua_boxplot")
    k30 = next(r for r in rs.runs if r.params[KEY] == "30")
    save_figure(plot_device_timeline(k30), img / f"{args.name}_timeline_k30")

    tb = time_breakdown(rs)
    per_k = dict(zip(tb[KEY], tb["round_time_s"], strict=True))
    ratio = per_k["30"] / per_k["3"]
    lines = [
        f"Sweep: {rel_path(args.out, ROOT)} ({len(rs)} runs, {args.seeds} seeds per K)\n",
        "Mean virtual time per round:\n",
        to_markdown(tb[[KEY, "n_runs", "n_rounds", "round_time_s"]]),
        f"Ratio of mean round time K = 30 / K = 3: **{ratio:.2f}**\n",
        f"Rounds and virtual time to accuracy ≥ {args.target:g}:\n",
        to_markdown(target_table(rs, "accuracy", args.target)),
        "Per-round time by phase:\n",
        to_markdown(time_breakdown_table(rs)),
    ]
    img.mkdir(parents=True, exist_ok=True)
    (img / f"{args.name}_numbers.md").write_text("\n".join(lines))
    report = write_report(args.out, target=args.target)
    print("\n".join(lines))
    print(f"figures: {img}\nreport: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
