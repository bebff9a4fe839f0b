"""The ``fedsim`` command line: run, validate, profiles, sweep, report, init, scenarios."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import InputError, RuntimeFailure
from fedsim.sweep import SweepError

if TYPE_CHECKING:
    from fedsim.config import Scenario


def _progress(total: float, quiet: bool, unit: str = "round", fmt: str | None = None):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    # delay: nothing is drawn before the first round ends, so an error found while the run
    # is set up stays the only line on stderr
    return tqdm(
        total=total, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True, delay=0.01,
        bar_format=fmt,
    )  # fmt: skip


def _round_progress(scenario: Scenario, done: int, quiet: bool):  # type: ignore[no-untyped-def]
    """Return a progress bar and the ``on_round`` callback that moves it.

    With ``stop.max_virtual_s`` the bar follows virtual time towards it (rounds or versions
    counted beside it); otherwise it counts rounds (versions, asynchronous) to
    ``stop.max_rounds``.
    """
    noun = "version" if scenario.rounds.kind == "async" else "round"
    budget = scenario.stop.max_virtual_s
    if budget is not None:
        fmt = "{l_bar}{bar}| {n:.1f}/{total:g} virtual s [{elapsed}<{remaining}{postfix}]"
        bar = _progress(budget, quiet, "s", fmt)
    else:
        bar = _progress(scenario.stop.max_rounds, quiet, noun)
        bar.update(done)
    count = [done]

    def on_round(row: dict[str, object]) -> None:
        count[0] += 1
        t = float(row["virtual_time_s"])  # type: ignore[arg-type]
        post = {f"{noun}s": str(count[0])} if budget is not None else {"t_virtual": f"{t:.1f}s"}
        acc = row.get("accuracy")
        if acc is not None:
            post["acc"] = f"{float(acc):.3f}"  # type: ignore[arg-type]
        bar.set_postfix(post, refresh=False)
        bar.update(max(0.0, min(t, budget) - bar.n) if budget is not None else 1)

    return bar, on_round


@contextlib.contextmanager
def _resumable(out: Path) -> Iterator[Callable[[], bool]]:
    """Stop a run cleanly on Ctrl-C or SIGTERM; say how to continue it in ``out``.

    Yields the run's ``stop`` callable. The first signal asks the run to stop after the
    round going on (it checkpoints there); a second one stops it at once.
    """
    asked = threading.Event()

    def request(signum: int, frame: object) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print(
            "\nstopping after this round, with a checkpoint (again to stop now)",
            file=sys.stderr,
        )

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield asked.is_set
    except (KeyboardInterrupt, RuntimeFailure) as exc:
        if (out / "run.partial.json").is_file():
            failed = isinstance(exc, RuntimeFailure)
            what = f"runtime failure: {exc}" if failed else "interrupted"
            print(
                f"{what}; the finished rounds are in {out}; continue with: fedsim resume {out}",
                file=sys.stderr,
            )
            if failed:
                raise SystemExit(1) from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cmd_run(args: argparse.Namespace) -> int:
    from fedsim.api import run
    from fedsim.config import load_scenario
    from fedsim.results import default_out_dir

    scenario = load_scenario(args.scenario, args.set)
    out = Path(args.out) if args.out else default_out_dir(scenario.name)
    bar, on_round = _round_progress(scenario, 0, args.quiet)
    try:
        with _resumable(out) as stop:
            result = run(
                scenario, out, on_round=on_round, source=args.scenario,
                on_warning=lambda line: bar.write(f"warning: {line}", file=sys.stderr),
                stop=stop,
            )  # fmt: skip
    finally:
        bar.close()
    print(run_summary(scenario, result.summary, result.path))
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from fedsim import checkpoint
    from fedsim.api import resume
    from fedsim.config import scenario_from_dict
    from fedsim.execution import read_partial

    out = Path(args.run_dir)
    partial = read_partial(out)
    scenario = scenario_from_dict(partial["scenario"], str(out / "run.partial.json"))
    start = checkpoint.next_round(out)
    bar, on_round = _round_progress(scenario, start, args.quiet)
    try:
        with _resumable(out) as stop:
            result = resume(out, on_round=on_round, stop=stop)
    finally:
        bar.close()
    print(run_summary(scenario, result.summary, result.path))
    return 0


def run_summary(scenario: Scenario, s: dict[str, Any], path: Path) -> str:
    """Return the lines ``fedsim run`` prints at the end: what stopped it, the target, totals."""
    from fedsim.profiles import si_format

    target = scenario.stop.target_accuracy
    if s["final_accuracy"] is None and s.get("final_ua_mean") is not None:
        acc = f"no global model; final mean UA {s['final_ua_mean']:.4f}"
    elif s["final_accuracy"] is None:
        acc = "accuracy n/a (learning: false)"
    else:
        acc = f"final accuracy {s['final_accuracy']:.4f} (best {s['best_accuracy']:.4f})"
        if target is not None:
            hit = s["stopped_by"] == "target_accuracy"
            acc += f"; target {target} {'reached' if hit else 'NOT reached'}"
        target_ua = scenario.stop.target_ua
        if target_ua is not None:
            hit = s["stopped_by"] == "target_ua"
            acc += f"; UA target {target_ua} {'reached' if hit else 'NOT reached'}"
    rounds = (
        f"{s['versions']} global versions (asynchronous)"
        if scenario.rounds.kind == "async"
        else f"{s['rounds']} rounds ({s['versions']} global versions)"
    )
    return (
        f"{scenario.name}: {rounds}, "
        f"virtual time {s['virtual_time_s']:.1f} s, stopped by {s['stopped_by']}\n"
        f"  {acc}\n"
        f"  traffic up {si_format(s['bytes_up'], 'B')} / down {si_format(s['bytes_down'], 'B')}, "
        f"device energy {s['energy_j']:.1f} J, stragglers {s['stragglers']}, "
        f"dropped {s['dropped']}\n"
        f"  results: {path}\n"
        f"  report:  fedsim report {path}"
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from fedsim.api import check
    from fedsim.checks import scenario_imports
    from fedsim.config import load_scenario

    scenario = load_scenario(args.scenario, args.set)
    prep = check(scenario, args.scenario)
    topo = scenario.topology
    print(
        f"{args.scenario}: OK — {topo.num_devices()} devices under {len(topo.edges)} edge(s); "
        f"model {prep.model.name} ({prep.model.num_params:,} parameters, "
        f"{prep.payloads.upload_bytes:,} bytes up per update); dataset {prep.dataset.name} "
        f"({len(prep.dataset.y_train):,} train / {len(prep.dataset.y_test):,} test)"
    )
    for module, fields in scenario_imports(scenario).items():
        print(f"imports: {module} ({', '.join(fields)})")
    for line in prep.warnings():
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    from fedsim.profiles import load_profiles

    lib = load_profiles(Path(args.dir) if args.dir else None)
    print("hardware:")
    for name in sorted(lib.devices):
        figs = ", ".join(f"{k} {v}" for k, v in lib.devices[name].key_figures().items())
        print(f"  {name:<14} {figs}")
    print("links:")
    for name in sorted(lib.links):
        figs = ", ".join(f"{k} {v}" for k, v in lib.links[name].key_figures().items())
        print(f"  {name:<14} {figs}")
    return 0


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from fedsim.bundled import SCENARIOS, bundled_dir, scenario_names

    root = bundled_dir(SCENARIOS)
    for name in scenario_names():
        first = (root / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"  {name:<32} {about[:72] + '...' if len(about) > 75 else about}")
    print("copy one with: fedsim init NAME")
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from fedsim.bundled import copy_scenario

    written = copy_scenario(args.name, Path(args.dir))
    for path in written:
        print(f"wrote {path}")
    print(f"run it with: fedsim run {written[0]}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fedsim.results import creatable_problem
    from fedsim.sweep import SweepInterrupted, SweepProgress, format_progress, parse_grid, run_sweep

    folder = Path(args.out)
    problem = (
        f"{folder} is a file" if folder.exists() and not folder.is_dir()
        else None if folder.is_dir() else creatable_problem(folder)
    )  # fmt: skip
    if problem is not None:
        raise InputError(f"{folder}: (--out): cannot make the sweep folder: {problem}")

    def show(progress: SweepProgress) -> None:
        print(format_progress(progress), file=sys.stderr, flush=True)

    try:
        out = run_sweep(
            Path(args.scenario), parse_grid(args.grid), args.seeds, Path(args.out),
            parallel=args.parallel, extra_sets=args.set, progress=show,
        )  # fmt: skip
    except SweepInterrupted as exc:
        print(exc, file=sys.stderr)
        raise
    print(f"sweep: {out}")
    print(f"report: fedsim report {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fedsim.analysis.report import write_report
    from fedsim.results import creatable_problem

    src = Path(args.run_dir)
    if not src.is_dir():
        raise InputError(f"{src}: (folder): expected a run folder or a sweep folder")
    html = Path(args.output) if args.output else src / "report.html"
    problem = f"{html} is a folder" if html.is_dir() else creatable_problem(html.parent)
    if problem is not None:
        raise InputError(f"{html}: (-o): cannot write the report: {problem}")
    try:
        out = write_report(src, html, gantt_round=args.round)
    except OSError as exc:  # no runs in the folder (the message names it), or a write
        where = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        raise InputError(where) from None
    print(f"report: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fedsim`` command."""
    from fedsim import __version__

    parser = argparse.ArgumentParser(prog="fedsim", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def scenario_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("scenario", help="scenario YAML file")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY.PATH=VALUE",
            help="override a scenario value (repeatable), e.g. --set rounds.participants=5",
        )  # fmt: skip

    p = sub.add_parser("run", help="run a scenario and write a run folder")
    scenario_args(p)
    p.add_argument("--out", help="run folder to create (default runs/<name>-<n>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    p.add_argument("run_dir", help="the run folder (it holds run.partial.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("validate", help="check a scenario and its profiles without running")
    scenario_args(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("profiles", help="list hardware and link profiles")
    p.add_argument("--dir", help="profiles folder (default: the bundled hardware_profiles/)")
    p.set_defaults(func=_cmd_profiles)

    p = sub.add_parser("sweep", help="run a grid of scenario variants and seeds")
    scenario_args(p)
    p.add_argument("--grid", action="append", default=[], metavar="KEY.PATH=V1,V2,...")
    p.add_argument("--seeds", type=int, default=1, help="seeds per grid point")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument("--out", required=True, help="sweep folder")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("scenarios", help="list the bundled starter scenarios")
    p.set_defaults(func=_cmd_scenarios)

    p = sub.add_parser("init", help="copy a bundled starter scenario into a folder")
    p.add_argument("name", nargs="?", default="quickstart", help="its name (fedsim scenarios)")
    p.add_argument("--dir", default=".", help="where to copy it (default: here)")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("report", help="write one self-contained HTML report")
    p.add_argument("run_dir", help="a run folder or a sweep folder")
    p.add_argument("-o", "--output", help="HTML file (default <dir>/report.html)")
    p.add_argument(
        "--round", type=int, metavar="R",
        help="draw the device timelines of round R (from 0; default: the worst round)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input prints one line per problem and returns 2."""
    args = build_parser().parse_args(argv)
    return guarded(lambda: int(args.func(args)))


def guarded(command: Callable[[], int]) -> int:
    """Run ``command``; turn what it raises into a message and fedsim's exit codes.

    Bad input: one ``error:`` line per problem, its exit code (2); a runtime failure or a
    bug: one line (a bug's traceback kept in a file), 1; Ctrl-C: 130; a closed pipe: 141.
    """
    try:
        return command()
    except InputError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except RuntimeFailure as exc:
        print(f"runtime failure: {exc}", file=sys.stderr)
        return 1
    except SweepError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (fedsim scenarios | head): not a bug
        # Python would complain once more flushing stdout at exit: point it at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: one line here, the traceback kept in a file
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: internal error: {_saved_traceback(exc)}", file=sys.stderr)
        return 1


#: Set to show an internal error's traceback instead of one line.
DEBUG_ENV = "FEDSIM_DEBUG"


def _saved_traceback(exc: Exception) -> str:
    """Write ``exc``'s traceback to a temporary file; return one line that names it."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix="fedsim-traceback-", suffix=".txt", delete=False
        ) as f:
            traceback.print_exception(exc, file=f)
        saved = f"traceback in {f.name}"
    except OSError:
        saved = f"set {DEBUG_ENV}=1 to see the traceback"
    return f"{what} (a bug in fedsim, please report it; {saved})"


if __name__ == "__main__":
    sys.exit(main())
