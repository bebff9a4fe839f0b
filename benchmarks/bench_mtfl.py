"""MTFL's algorithms against plain FedAvg: wall seconds per round on the Table 2 workload.

Workload: ``scenarios/mnist_2nn.yaml`` as shipped -- MNIST (``$FEDSIM_DATA/mnist``), the
BatchNorm 2NN ``mtfl_2nn``, W = 200 devices with 2 label shards, C = 0.5 (100 devices a
round), E = 1, B = 20 (15 steps), inline with lock-step training, the global model and every
device's user model (UA) evaluated every round -- what each cell of the Table 2 grid runs.
Variants (``algorithm`` overrides): FedAvg (lr 0.3), MTFL(FedAvg) with private (γ, β) and
with all four BN values private, FedAdam, FedAvg-Adam, MTFL(FedAvg-Adam) (γ, β), and
Per-FedAvg and pFedMe when they are registered.

Seconds per round: the median of ``timings.json``'s ``wall_s_per_round`` after the first
round (training, aggregation, evaluation and the result rows; set-up excluded). Runs are
interleaved over ``--repeat`` passes and each variant's figure is the median over passes;
the ratio is against FedAvg measured in the same process. Targets (issue 20): FedAvg-Adam
≤ 1.5 ×, private patches ≤ 1.2 ×.

    FEDSIM_DATA=../shared/data python benchmarks/bench_mtfl.py [--rounds 6] [--repeat 1]
        [--no-ua] [--only fedavg,fedavg_adam] [--json rows.json] [--set runtime.torch_threads=2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from fedsim.algorithms import BUILTIN_ALGORITHMS  # noqa: E402
from fedsim.api import run  # noqa: E402
from fedsim.config import load_scenario  # noqa: E402

SCENARIO = ROOT / "scenarios" / "mnist_2nn.yaml"
#: name -> ``--set`` overrides of the algorithm (the scenario's FedAvg at lr 0.3 otherwise)
VARIANTS: dict[str, list[str]] = {
    "fedavg": [],
    "mtfl_gamma_beta": ["algorithm.params.private=gamma_beta"],
    "mtfl_all": ["algorithm.params.private=all"],
    "fedadam": ["algorithm.use=fedadam"],
    "fedavg_adam": ["algorithm.use=fedavg_adam", "algorithm.params.lr=0.003"],
    "mtfl_fedavg_adam": [
        "algorithm.use=fedavg_adam",
        "algorithm.params.lr=0.003",
        "algorithm.params.private=gamma_beta",
    ],
    "per_fedavg": ["algorithm={use: per_fedavg, params: {alpha: 0.1, beta: 0.3}}"],
    "pfedme": ["algorithm={use: pfedme, params: {lr: 0.1, lam: 1.0}}"],
}


def _use(sets: list[str]) -> str:
    for item in sets:
        if item.startswith("algorithm.use="):
            return item.split("=", 1)[1]
        if item.startswith("algorithm={use: "):
            return item.split("use: ", 1)[1].split(",", 1)[0]
    return "fedavg"


def seconds_per_round(
    name: str, rounds: int, ua: bool, out: Path, extra: list[str] | None = None
) -> float:
    """Run one variant; return its median wall seconds per round after the first."""
    sets = [
        *(extra or []),
        *VARIANTS[name],
        f"stop.max_rounds={rounds}",
        "stop.target_accuracy=null",
        f"evaluation.ua={str(ua).lower()}",
    ]
    result = run(load_scenario(SCENARIO, sets), out / name)
    walls = json.loads((result.path / "timings.json").read_text())["wall_s_per_round"]
    return float(statistics.median(walls[1:]))


def main(argv: list[str] | None = None) -> int:
    """Measure every variant; print seconds per round and the ratio to FedAvg."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-ua", action="store_true", help="evaluate the global model only")
    ap.add_argument("--only", help="comma-separated variant names (fedavg always runs)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="override for every variant, e.g. runtime.torch_threads=2 (repeatable)",
    )
    args = ap.parse_args(argv)
    names = [n for n in VARIANTS if _use(VARIANTS[n]) in BUILTIN_ALGORITHMS]
    skipped = [n for n in VARIANTS if n not in names]
    if args.only:
        wanted = {"fedavg", *args.only.split(",")}
        names = [n for n in names if n in wanted]
    if skipped:
        print(f"not registered, skipped: {', '.join(skipped)}", file=sys.stderr)
    walls: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench_mtfl_") as tmp:
        # a warm-up, not measured
        seconds_per_round("fedavg", 2, not args.no_ua, Path(tmp) / "warm-up", args.set)
        for rep in range(args.repeat):
            for name in names:
                s = seconds_per_round(
                    name, args.rounds, not args.no_ua, Path(tmp) / f"{rep}", args.set
                )
                walls[name].append(s)
                print(f"pass {rep + 1}: {name:18s} {s:.3f} s/round", file=sys.stderr)
    base = statistics.median(walls["fedavg"])
    rows = [
        {"variant": n, "s_per_round": statistics.median(w), "ratio": statistics.median(w) / base}
        for n, w in walls.items()
    ]
    print(f"| variant | s/round (median of {args.repeat}) | ÷ FedAvg |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_round']:.3f} | {r['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
