"""Driver cost as the population grows: systems-only runs of 10^3 ... 10^6 devices.

Run: python benchmarks/bench_scale.py [--rounds 6] [--per-round 1000] [--max-devices 1000000]

Each population runs in its own process (so its peak memory is its own): the quickstart
topology resized to N devices, ``learning: false`` with ``data.samples_per_device`` (no
partition), model digits_mlp, K devices per round (no deadline, no over-selection), once
with ``always_on`` and once with ``on_off`` availability (mean on 60 s, off 20 s). Prints
setup seconds, driver milliseconds per round (median over rounds after the first) and the
part of it spent in the SimPy collection phase (every selected device's process, from the
round's start to its close),
devices simulated per second, peak RSS of the process and how much of it the run added
beyond the imports, and setup time and cost per simulated device relative to the
10^3-device case (with on/off availability fewer than K devices of a small population
are on line, so the per-device cost is the fair comparison). Run folders go to a
temporary directory that is removed at the end.
"""

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OTHER_DEVICES = 20  # the quickstart's other three device groups (5 + 10 + 5)


def _rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(devices: int, kind: str, rounds: int, per_round: int, out: Path) -> dict[str, float]:
    """Run one configuration in this process; return its figures."""
    import fedsim.sim.simulation as simulation
    from fedsim.api import run  # imported here so the baseline RSS includes the libraries

    collection_s: list[float] = []
    run_round = simulation.run_round

    def timed_round(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        """The SimPy collection phase of a round, timed from its start to its end."""
        t0 = time.perf_counter()
        timing = yield from run_round(*args, **kwargs)
        collection_s.append(time.perf_counter() - t0)
        return timing

    simulation.run_round = timed_round  # type: ignore[assignment]
    base_mb = _rss_mb()
    overrides = [
        "learning=false",
        f"topology.edges.0.devices.0.count={devices - OTHER_DEVICES}",
        f"rounds.participants={min(per_round, devices)}",
        "rounds.over_selection=1.0",
        "rounds.deadline_s=null",
        "data.samples_per_device=50",
        "data.samples_sigma=0.5",
        f"availability.kind={kind}",
        f"stop.max_rounds={rounds}",
        "stop.target_accuracy=null",
    ]
    res = run(REPO / "scenarios" / "quickstart.yaml", out, overrides)
    timings = json.loads((res.path / "timings.json").read_text())
    per_round_s = timings["wall_s_per_round"]
    later = per_round_s[1:] or per_round_s
    simulated = float(res.rounds["participants"].iloc[1:].mean() if rounds > 1 else per_round)
    median_s = statistics.median(later)
    return {
        "setup_s": timings["setup_s"],
        "first_ms": per_round_s[0] * 1e3,
        "ms_per_round": median_s * 1e3,
        "simpy_ms": statistics.median(collection_s[1:] or collection_s) * 1e3,
        "devices_per_round": simulated,
        "devices_per_s": simulated / median_s,
        "peak_rss_mb": _rss_mb(),
        "added_rss_mb": _rss_mb() - base_mb,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=1000, help="devices per round (K)")
    ap.add_argument("--max-devices", type=int, default=1_000_000)
    ap.add_argument("--one", nargs=2, metavar=("DEVICES", "KIND"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        figures = one(int(args.one[0]), args.one[1], args.rounds, args.per_round, Path(args.out))
        print(json.dumps(figures))
        return 0

    populations = [n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_devices]
    print(
        f"fedsim driver scale benchmark: systems only, digits_mlp, {args.per_round} devices "
        f"per round, {args.rounds} rounds; {platform.node()}, {platform.processor() or '?'}, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="fedsim-bench-scale-"))
    try:
        for kind in ("always_on", "on_off"):
            print(f"\navailability: {kind}")
            print(
                f"{'devices':>9} {'setup s':>8} {'first ms':>9} {'ms/round':>9} {'SimPy ms':>8} "
                f"{'dev/round':>9} {'devices/s':>10} {'peak RSS MB':>11} {'run added MB':>12} "
                f"{'x setup':>8} {'x us/device':>11}"
            )
            base: dict[str, float] | None = None
            for n in populations:
                cmd = [
                    sys.executable, __file__, "--one", str(n), kind, "--rounds", str(args.rounds),
                    "--per-round", str(args.per_round), "--out", str(tmp / f"{kind}-{n}"),
                ]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                f = json.loads(done.stdout.strip().splitlines()[-1])
                base = base or f
                print(
                    f"{n:>9,} {f['setup_s']:>8.2f} {f['first_ms']:>9.1f} {f['ms_per_round']:>9.1f} "
                    f"{f['simpy_ms']:>8.1f} "
                    f"{f['devices_per_round']:>9.0f} {f['devices_per_s']:>10,.0f} "
                    f"{f['peak_rss_mb']:>11.0f} {f['added_rss_mb']:>12.1f} "
                    f"{f['setup_s'] / base['setup_s']:>8.2f} "
                    f"{base['devices_per_s'] / f['devices_per_s']:>11.2f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
