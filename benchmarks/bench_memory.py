"""Memory of a long run: flat after warm-up, however many rounds (streaming results).

Run: python benchmarks/bench_memory.py [--devices 1000000] [--rounds 10000] [--per-round 1000]
         [--set network.contention=false ...]

One systems-only run (``learning: false``) of the quickstart topology resized to
``--devices`` devices, ``--per-round`` selected per round (over-selected 1.2 x, on/off
availability), for ``--rounds`` rounds, with the default checkpoints (every 60 s of wall
time). The resident set size (RSS, from /proc/self/statm) is sampled after every round.
Printed: RSS after the warm-up (the first 5 % of the rounds), at the end and its peak, the
growth after warm-up (end / warm-up and peak / warm-up) against the target "growth <= 5 %
after warm-up", and, as the baseline measured in the same run, the RSS the rows would
take if held in memory (the bytes written to the tables, a lower bound on their size as
Python objects), plus driver milliseconds per round.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Return this process's resident memory now, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=10_000)
    ap.add_argument("--per-round", type=int, default=1000)
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="more scenario overrides, e.g. network.contention=false")  # fmt: skip
    args = ap.parse_args()
    from fedsim.api import run
    from fedsim.config import load_scenario

    others = 20  # the quickstart's other three device groups
    sets = [
        "learning=false", f"topology.edges.0.devices.0.count={args.devices - others}",
        f"rounds.participants={args.per_round}", "data.samples_per_device=40",
        "data.samples_sigma=0.5", f"stop.max_rounds={args.rounds}", "stop.target_accuracy=null",
        "rounds.deadline_s=null", *args.set,
    ]  # fmt: skip
    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml", sets)
    samples: list[float] = []
    walls: list[float] = []
    last = [time.perf_counter()]

    def on_round(row: dict[str, object]) -> None:
        samples.append(rss_mb())
        now = time.perf_counter()
        walls.append(now - last[0])
        last[0] = now
        if len(samples) % max(1, args.rounds // 20) == 0:
            print(f"  round {len(samples):>6,}: RSS {samples[-1]:7.1f} MB", file=sys.stderr)

    print(
        f"memory of a long run: {args.devices:,} devices, {args.per_round:,} per round, "
        f"{args.rounds:,} rounds, systems only, {' '.join(args.set) or 'no more overrides'}; "
        f"Python {sys.version.split()[0]}"
    )
    before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        res = run(sc, Path(tmp) / "run", on_round=on_round)
        table_mb = sum((res.path / n).stat().st_size for n in ("rounds.csv", "device_rounds.csv",
                                                               "device_ua.csv")) / 1e6  # fmt: skip
    warm = samples[max(0, len(samples) // 20 - 1)]
    end, peak = samples[-1], max(samples[len(samples) // 20 :])
    growth = max(end, peak) / warm - 1
    print(f"  RSS before the run        {before:8.1f} MB")
    print(f"  RSS after warm-up         {warm:8.1f} MB  (round {len(samples) // 20:,})")
    print(f"  RSS at the end            {end:8.1f} MB")
    print(f"  RSS peak after warm-up    {peak:8.1f} MB")
    verdict = "MET" if growth <= 0.05 else "MISSED"
    print(f"  growth after warm-up      {growth * 100:8.2f} %   target <= 5 %: {verdict}")
    print(f"  rows written (baseline)   {table_mb:8.1f} MB  = {table_mb / warm:.2f} x the "
          "warm-up RSS, had they stayed in memory")  # fmt: skip
    print(f"  driver ms per round       {statistics.median(walls[1:]) * 1e3:8.1f} (median)")
    return 0 if growth <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
