"""Wall-clock of the Ray runtime with 1 and 2 workers against inline, on MNIST 2NN.

Run: FEDSIM_DATA=../shared/data python benchmarks/bench_ray.py [--rounds 4] [--devices 50]
Prints seconds per round (median over rounds after the first), the 1-worker / 2-worker
ratio, and the per-device memory a host keeps.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.prepare import check, device_partitions

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--devices", type=int, default=50, help="devices per round")
    args = ap.parse_args()
    data = os.environ.get("FEDSIM_DATA", str(REPO.parent / "shared" / "data"))
    sets = [
        f"data.dir={data}",
        f"stop.max_rounds={args.rounds}",
        "stop.target_accuracy=null",
        f"rounds.participants={args.devices}",
        "rounds.participation=null",
        "evaluation.ua=false",
    ]
    out = Path(tempfile.mkdtemp())
    results = {}
    for label, extra in [
        ("inline", []),
        ("ray-1", ["runtime.kind=ray", "runtime.workers=1"]),
        ("ray-2", ["runtime.kind=ray", "runtime.workers=2"]),
    ]:
        sc = load_scenario(REPO / "scenarios" / "mnist_2nn.yaml", sets + extra)
        res = run(sc, out / label)
        per_round = json.loads((res.path / "timings.json").read_text())["wall_s_per_round"]
        results[label] = statistics.median(per_round[1:]) if len(per_round) > 1 else per_round[0]
        print(
            f"{label:7s} {results[label]:.3f} s/round (median after the first), "
            f"first round {per_round[0]:.2f} s",
            flush=True,
        )
    print(f"speed-up ray 2 workers vs 1 worker: {results['ray-1'] / results['ray-2']:.2f}x")
    print(f"ray 2 workers vs inline: {results['inline'] / results['ray-2']:.2f}x")
    prep = check(load_scenario(REPO / "scenarios" / "mnist_2nn.yaml", sets))
    parts = device_partitions(prep)
    idx_bytes = sum(p.train_idx.nbytes + p.test_idx.nbytes for p in parts)
    print(
        f"per-device memory in a host: {idx_bytes / len(parts):.0f} bytes of indices "
        f"(the dataset, {prep.dataset.x_train.nbytes / 1e6:.0f} MB, is shared once per "
        "node through Ray's object store, not copied per device)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
