"""Run PerFit's case study (Section V, Figs. 6-8) on synthetic_har; write docs/perfit_case_study.md.

Usage (from the repository root)::

    python analysis/make_perfit_docs.py [--seeds 3] [--parallel 1]
    python analysis/make_perfit_docs.py --quick      # smoke test: 1 seed, 4 rounds

Wu et al., "Personalized Federated Learning for Intelligent IoT Applications: A Cloud-Edge
based Framework" (papers/perfit.md, Sec. V). MobiAct is not available here; the scenarios
run the built-in ``synthetic_har`` data (30 users, one per device, 480 training windows of
a skewed activity mix and 160 class-balanced test windows each), K = 5 of 30 devices a
round. Over ``--seeds`` seeds it runs:

* federated (:func:`analysis.perfit_methods.federated_variants`): on
  ``scenarios/perfit/case_study.yaml`` FL (FedAvg), FTL (fine-tuning the last layer, and
  all layers) and FedPer (last layer personal), each with PerFit's 3NN on the 561
  engineered features and its CNN on the 9 x 128 inertial windows; on
  ``scenarios/perfit/fd.yaml`` federated distillation FD-CNN, FD-1 and FD-2; on
  ``scenarios/perfit/mocha.yaml`` MOCHA -- as resumable sweep folders
  (:func:`analysis.docgen.run_variants`: complete runs are reused) under ``--out``
  (default ``runs/perfit``);
* centralised (:data:`analysis.perfit_methods.BASELINES`): SVM, kNN, random forest and
  c3NN on the engineered view, cCNN on the inertial view
  (:func:`analysis.perfit_baselines.baseline_runs`), cached per seed under
  ``<out>/baselines``;

and writes the doc's generated block (:func:`analysis.perfit_doc.doc_block`): the mean
user-model accuracy (UA) per method beside PerFit's numbers, a UA box plot over the devices
(``docs/img/perfit_ua_boxplot.png``, PerFit Fig. 7), UA per round
(``docs/img/perfit_ua_rounds.png``), the bytes per device per round (PerFit Fig. 8's
communication), the model sizes against PerFit's, and which of PerFit's findings the
measurements here agree with. ``--quick`` runs 1 seed of 4 rounds and small baselines and
writes the doc and figures under ``runs/perfit_quick`` instead.

The pieces: :mod:`analysis.perfit_methods` (the methods, PerFit's numbers, the settings),
:mod:`analysis.perfit_baselines`, :mod:`analysis.perfit_tables`,
:mod:`analysis.perfit_findings` (model sizes and findings), :mod:`analysis.perfit_plots`
and :mod:`analysis.perfit_doc` (the doc's text).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis.docgen import rel_path, replace_block, run_variants  # noqa: E402
from analysis.perfit_baselines import baseline_runs  # noqa: E402
from analysis.perfit_doc import BEGIN, END, doc_block, new_doc  # noqa: E402
from analysis.perfit_methods import KEY, QUICK, Setting, federated_variants, method_order  # noqa: E402
from analysis.perfit_plots import plot_boxplot, plot_rounds  # noqa: E402
from analysis.perfit_tables import device_frame  # noqa: E402
from fedsim.analysis import save_figure  # noqa: E402
from fedsim.errors import InputError  # noqa: E402
from fedsim.sweep import SweepError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the case study and write the doc; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--parallel", type=int, default=1, help="federated methods at a time")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 rounds, small baselines")
    parser.add_argument("--out", type=Path, default=None, help="default runs/perfit")
    parser.add_argument("--img", type=Path, default=None, help="default docs/img")
    parser.add_argument("--doc", type=Path, default=None, help="default docs/perfit_case_study.md")
    parser.add_argument("--no-doc", action="store_true", help="leave the doc alone")
    args = parser.parse_args(argv)

    base = QUICK if args.quick else Setting()
    setting = dataclasses.replace(base, seeds=args.seeds or base.seeds)
    if setting.seeds < 1:
        parser.error("--seeds: expected at least 1")
    out = args.out or ROOT / ("runs/perfit_quick" if args.quick else "runs/perfit")
    img = args.img or (out / "img" if args.quick else ROOT / "docs/img")
    doc = args.doc or (out if args.quick else ROOT / "docs") / "perfit_case_study.md"
    imgs = {"boxplot": img / "perfit_ua_boxplot.png", "rounds": img / "perfit_ua_rounds.png"}
    given = list(sys.argv[1:] if argv is None else argv)
    command = f"python analysis/make_perfit_docs.py {shlex.join(given)}".rstrip()
    # the runs are `python -m fedsim` subprocesses: let them import this checkout's fedsim
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    t0 = time.perf_counter()
    try:
        variants = federated_variants(setting.sets)
        rs = run_variants(variants, out, setting.seeds, KEY, parallel=args.parallel)
        baselines, baseline_s = baseline_runs(out, setting, say=lambda s: print(s, file=sys.stderr))
    except (InputError, SweepError) as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    per_device = device_frame(rs.runs, baselines)
    save_figure(plot_boxplot(per_device, method_order()), imgs["boxplot"], formats=("png",))
    save_figure(plot_rounds(rs.runs), imgs["rounds"], formats=("png",))
    block = doc_block(rs.runs, baselines, baseline_s, command, out, imgs, doc)
    print(block)
    if not args.no_doc:
        if not doc.is_file():
            new_doc(doc)
        replace_block(doc, BEGIN, END, block)
        print(f"updated {rel_path(doc, ROOT)}", file=sys.stderr)
    print(f"wall time {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
