"""The ``python -m fedsim.baselines`` command line: run the baselines, write two CSV files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fedsim.baselines.centralised import (
    METHODS,
    BaselineOptions,
    check_options,
    parse_methods,
    run_baselines,
    summarise,
)
from fedsim.errors import InputError

PER_DEVICE_FILE = "baselines_per_device.csv"
SUMMARY_FILE = "baselines_summary.csv"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m fedsim.baselines``."""
    p = argparse.ArgumentParser(
        prog="python -m fedsim.baselines",
        description="Centralised baselines (PerFit section V): SVM, kNN, random forest and the "
        "scenario's model, trained on the devices' pooled training data and scored on every "
        "device's own test split (docs/baselines.md).",
    )
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--out", required=True, help="folder for the two CSV files (made if missing)")
    p.add_argument(
        "--methods", default=",".join(METHODS),
        help=f"comma-separated baselines to run (default {','.join(METHODS)})",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override a scenario value (repeatable), e.g. --set seed=2",
    )  # fmt: skip
    d = BaselineOptions()
    p.add_argument("--knn-k", type=int, default=d.knn_k, help=f"kNN neighbours ({d.knn_k})")
    p.add_argument("--rf-trees", type=int, default=d.rf_trees, help=f"RF trees ({d.rf_trees})")
    p.add_argument("--svm-c", type=float, default=d.svm_c, help=f"SVM's C ({d.svm_c})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"nn epochs ({d.epochs})")
    p.add_argument("--lr", type=float, help="nn SGD step (default: the scenario's device SGD's)")
    p.add_argument("--batch-size", type=int, help="nn batch (default: the scenario's)")
    p.add_argument(
        "--max-train", type=int,
        help="train every method on a seeded subsample of this many pooled rows (default: all)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _out_problem(folder: Path) -> str | None:
    """Return why the CSV files cannot be written in ``folder``, or None."""
    from fedsim.results import creatable_problem

    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file"
    return None if folder.is_dir() else creatable_problem(folder)


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV to a temporary sibling of ``path``, then rename it over ``path``."""
    from fedsim.sweep_runner import write_atomic

    write_atomic(path, frame.to_csv(index=False, lineterminator="\n"))


def _run(args: argparse.Namespace) -> int:
    options = BaselineOptions(
        methods=parse_methods(args.methods), knn_k=args.knn_k, rf_trees=args.rf_trees,
        svm_c=args.svm_c, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        max_train=args.max_train,
    )  # fmt: skip
    if problems := check_options(options):
        raise InputError(problems)
    out = Path(args.out)
    problem = _out_problem(out)
    if problem is not None:
        raise InputError(f"{out}: (--out): cannot write the baselines' files: {problem}")

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    per_device = run_baselines(args.scenario, options, args.set, args.scenario, say)
    summary = summarise(per_device)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / PER_DEVICE_FILE, per_device)
    write_csv_atomic(out / SUMMARY_FILE, summary)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"results: {out / PER_DEVICE_FILE}, {out / SUMMARY_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input prints one line per problem and returns 2."""
    from fedsim.cli import guarded

    args = build_parser().parse_args(argv)
    return guarded(lambda: _run(args))
