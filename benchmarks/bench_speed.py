"""Issue 9's standard workload: fedsim (inline and Ray) against a raw PyTorch loop and a floor.

Workload: 200 devices x 300 samples (MNIST from ``$FEDSIM_DATA/mnist`` when present, else
MNIST-shaped synthetic data), 2NN 784-200-200-10 (``fedavg_2nn``), FedAvg lr 0.1, E = 1,
B = 20, all 200 devices every round (3,000 SGD steps per round), global accuracy after every
round. In one process and one run it measures:

* ``raw``: a plain PyTorch loop training the devices one after another
  (``torch.optim.SGD``), then the weighted average and the evaluation;
* ``floor``: the fastest batched round written without the simulator: all devices'
  2NNs stacked and trained in lock-step with hand-written ``baddbmm`` forward and backward,
  the average as one matrix product, the same evaluation;
* ``fedsim-inline`` and ``fedsim-ray``: complete fedsim runs of the same scenario (SimPy
  time model, result files), vectorised device hosts.

All of them use the same data, the same initial model and the same batch orders, so their
accuracy trajectories must agree (checked, within a tolerance for float reordering). It
prints seconds per round (median over rounds after the first), ratios against the raw loop
and the floor, the first round's time and the peak memory (PSS) of the whole process tree,
Ray's processes included.

    FEDSIM_DATA=../shared/data python benchmarks/bench_speed.py [--rounds 6] [--skip-ray]
        [--skip-raw] [--recover]

``--recover`` adds ``ray-recover``: the Ray run with ``runtime.on_failure: recover``, whose
only cost without failures is one wait per round for the round's aggregations.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import fedsim
from fedsim.config import scenario_from_dict
from fedsim.prepare import check, device_partitions
from fedsim.runtime.base import LearningSetup
from fedsim.runtime.nodes import evaluate_state, initial_state, make_model
from fedsim.runtime.training import batch_order
from fedsim.seeding import Purpose, int_seed

DEVICES, SAMPLES, LR, EPOCHS, BATCH = 200, 300, 0.1, 1, 20
SEED = 1
ACCURACY_TOLERANCE = 0.01


# -- memory of the process tree ------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_pss(root: int) -> dict[str, int]:
    """Return the proportional set size (bytes) of ``root`` and each descendant, by process."""
    kids = _children()
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                name = f.read().replace("\0", " ").strip()
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        out[f"{pid} {name[:60]}"] = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return out


def tree_pss_bytes(root: int) -> int:
    """Return the proportional set size of ``root`` and all its descendants."""
    return sum(tree_pss(root).values())


@contextmanager
def peak_memory(interval_s: float = 1.0) -> Iterator[list[Any]]:
    """Sample the process tree's PSS while the block runs.

    Yields ``[peak bytes, {process: bytes} at the peak]``, filled in as it samples.

    One sample of a Ray tree costs about 20 ms of CPU (smaps_rollup of a dozen processes), so
    sampling is kept sparse (2 % of one core) lest it slow the contender it measures; rounds
    repeat the same allocations, so a sample a second still meets the plateau.
    """
    first = tree_pss(os.getpid())
    peak: list[Any] = [sum(first.values()), first]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            now = tree_pss(os.getpid())
            if sum(now.values()) > peak[0]:
                peak[:] = [sum(now.values()), now]

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()


# -- the shared workload -------------------------------------------------------------------


def scenario_dict(data_dir: str | None, rounds: int) -> dict[str, Any]:
    data: dict[str, Any] = {"dataset": "mnist", "dir": data_dir, "partition": {"kind": "iid"}}
    if data_dir is None:
        data = {
            "dataset": "synthetic",
            "partition": {"kind": "iid"},
            "options": {"num_samples": 75_000, "num_features": 784, "num_classes": 10,
                        "test_fraction": 0.2},
        }  # fmt: skip
    return {
        "name": "bench_speed",
        "seed": SEED,
        "data": data,
        "model": "fedavg_2nn",
        "topology": {
            "cloud": {"hardware": "cloud_server", "backhaul": "wan"},
            "edges": [
                {
                    "name": "lab",
                    "hardware": "edge_server",
                    "backhaul": "wan",
                    "devices": [{"hardware": "rpi4", "link": "wifi", "count": DEVICES}],
                }
            ],
        },  # fmt: skip
        "algorithm": {
            "use": "fedavg",
            "params": {"lr": LR, "local_epochs": EPOCHS, "batch_size": BATCH},
        },
        "rounds": {"participants": DEVICES},
        "stop": {"max_rounds": rounds},
        "evaluation": {"every": 1, "ua": False},
        "runtime": {"kind": "inline", "vectorize": True},
    }


class Workload:
    """Data, partitions, initial model and batch orders shared by every contender."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.scenario = scenario_from_dict(raw, "bench_speed")
        prep = check(self.scenario)
        self.parts = device_partitions(prep)
        ds = prep.dataset
        self.x = torch.from_numpy(ds.x_train)
        self.y = torch.from_numpy(ds.y_train)
        self.x_test = torch.from_numpy(ds.x_test)
        self.y_test = torch.from_numpy(ds.y_test)
        setup = LearningSetup(SEED, "fedavg_2nn", ds, tuple(self.parts), self.scenario.algorithm, 1)
        self.model = make_model(setup)
        self.init = initial_state(setup, prep.algorithm)
        self.weights = np.array([len(p.train_idx) for p in self.parts], dtype=np.float64)
        self.weights /= self.weights.sum()

    def rows(self, device: int, round_index: int) -> list[np.ndarray]:
        idx = self.parts[device].train_idx
        seed = int_seed(SEED, Purpose.TRAIN, device, round_index)
        return [idx[b] for b in batch_order(len(idx), BATCH, EPOCHS, seed)]

    def accuracy(self, state: dict[str, torch.Tensor]) -> float:
        correct, _ = evaluate_state(self.model, state, self.x_test, self.y_test)
        return correct / int(self.y_test.shape[0])


def raw_round(w: Workload, state: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    """One FedAvg round the plain PyTorch way: device after device, then the mean."""
    model = w.model
    model.train()
    acc = {k: torch.zeros_like(v) for k, v in state.items()}
    for d in range(DEVICES):
        model.load_state_dict(state)
        sgd = torch.optim.SGD(model.parameters(), lr=LR)
        for rows in w.rows(d, r):
            rt = torch.from_numpy(rows)
            loss = F.cross_entropy(model(w.x[rt]), w.y[rt])
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
        for k, v in model.state_dict().items():
            acc[k].add_(v, alpha=float(w.weights[d]))
    return acc


LAYERS = ("0", "2", "4")  # the Linear layers of fedavg_2nn
#: Devices per lock-step chunk in the floor: of 8, 16, 32, 64 and 200 (measured with 1 and 2
#: threads), 16 and 32 were fastest; one chunk of all 200 was 1.3x slower (cache misses).
FLOOR_CHUNK = 32


def floor_round(w: Workload, state: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    """One FedAvg round, batched by hand: devices' 2NNs stacked in chunks, baddbmm both ways."""
    weights = torch.from_numpy(w.weights.astype(np.float32))
    out = {k: torch.zeros(v.numel()) for k, v in state.items()}
    for c in range(0, DEVICES, FLOOR_CHUNK):
        chunk = range(c, min(c + FLOOR_CHUNK, DEVICES))
        trained = floor_chunk(w, state, r, chunk)  # averaged as soon as trained: no copies
        for name, t in trained.items():
            out[name].addmv_(t.flatten(1).T, weights[c : chunk.stop])
    return {k: v.view_as(state[k]) for k, v in out.items()}


def floor_chunk(
    w: Workload, state: dict[str, torch.Tensor], r: int, devices: range
) -> dict[str, torch.Tensor]:
    """Train ``devices`` in lock-step; return their stacked weights and biases."""
    n = len(devices)
    ws = [state[f"{k}.weight"].expand(n, -1, -1).clone() for k in LAYERS]
    bs = [state[f"{k}.bias"].expand(n, -1).clone() for k in LAYERS]
    orders = [w.rows(d, r) for d in devices]
    for s in range(len(orders[0])):
        rows = torch.from_numpy(np.stack([o[s] for o in orders]))
        h, yb = w.x[rows], w.y[rows]
        acts = [h]
        for i in range(3):
            h = torch.baddbmm(bs[i].unsqueeze(1), h, ws[i].mT)
            if i < 2:
                h = torch.relu(h)
                acts.append(h)
        g = torch.softmax(h, 2)
        g.scatter_add_(2, yb.unsqueeze(2), torch.full_like(g[..., :1], -1.0)).div_(BATCH)
        for i in (2, 1, 0):
            g_in = torch.bmm(g, ws[i]) if i else None
            ws[i].baddbmm_(g.mT, acts[i], alpha=-LR)
            bs[i].sub_(LR * g.sum(1))
            if g_in is not None:
                g = torch.ops.aten.threshold_backward(g_in, acts[i], 0)
    return {
        f"{k}.{p}": t[i] for i, k in enumerate(LAYERS) for p, t in (("weight", ws), ("bias", bs))
    }


@dataclass
class Measured:
    """One contender's figures."""

    times_s: list[float]
    accuracies: list[float]
    peak_bytes: int  # PSS of the whole process tree, at its highest during the run
    idle_bytes: int  # PSS of the process tree just before the run
    setup_s: float = 0.0
    peak_by_process: dict[str, int] | None = None

    @property
    def per_round_s(self) -> float:
        """Median seconds per round after the first."""
        t = self.times_s
        return statistics.median(t[1:]) if len(t) > 1 else t[0]


def run_baseline(
    w: Workload, step: Callable[[Workload, dict[str, torch.Tensor], int], dict[str, torch.Tensor]],
    rounds: int,
) -> Measured:  # fmt: skip
    """Run a baseline's rounds, timing each (training, averaging and evaluation)."""
    times, accs = [], []
    state = {k: v.clone() for k, v in w.init.items()}
    idle = tree_pss_bytes(os.getpid())
    with peak_memory() as peak:
        for r in range(rounds):
            t0 = time.perf_counter()
            state = step(w, state, r)
            accs.append(w.accuracy(state))
            times.append(time.perf_counter() - t0)
    return Measured(times, accs, peak[0], idle)


def run_fedsim(raw: dict[str, Any], out: Path, extra: dict[str, Any]) -> Measured:
    """Run fedsim on the workload; seconds per round come from its timings.json."""
    sc = dict(raw, runtime=dict(raw["runtime"], **extra))
    gc.collect()
    idle = tree_pss_bytes(os.getpid())
    with peak_memory() as peak:
        res = fedsim.run(scenario_from_dict(sc, "bench_speed"), out)
    timings = json.loads((res.path / "timings.json").read_text())
    accs = res.rounds["accuracy"].tolist()
    return Measured(timings["wall_s_per_round"], accs, peak[0], idle, timings["setup_s"], peak[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in this process")
    ap.add_argument("--workers", type=int, default=2, help="Ray device-host actors")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-raw", action="store_true")
    ap.add_argument("--recover", action="store_true",
                    help="also run fedsim on Ray with runtime.on_failure: recover")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = os.environ.get("FEDSIM_DATA")
    if data_dir and not (Path(data_dir) / "mnist").is_dir():
        data_dir = None
    raw = scenario_dict(data_dir, args.rounds)
    print(
        f"{DEVICES} devices x {SAMPLES} samples of {raw['data']['dataset']}, fedavg_2nn, "
        f"lr {LR}, E {EPOCHS}, B {BATCH}, {args.rounds} rounds, torch threads {args.threads}, "
        f"Ray workers {args.workers}, {os.cpu_count()} CPUs",
        flush=True,
    )
    rows: dict[str, Measured] = {}

    def done(name: str, m: Measured) -> None:
        rows[name] = m
        print(f"  {name}: {m.per_round_s:.3f} s/round", flush=True)

    w = Workload(raw)
    if not args.skip_raw:
        done("raw", run_baseline(w, raw_round, args.rounds))
    with torch.no_grad():
        done("floor", run_baseline(w, floor_round, args.rounds))
    del w  # the baselines' copy of the data: fedsim loads its own
    with tempfile.TemporaryDirectory() as tmp:
        inline_extra = {"torch_threads": args.threads}
        done("fedsim-inline", run_fedsim(raw, Path(tmp) / "inline", inline_extra))
        if not args.skip_ray:
            ray_extra = {"kind": "ray", "workers": args.workers}
            done("fedsim-ray", run_fedsim(raw, Path(tmp) / "ray", ray_extra))
            if args.recover:  # the cost of confirming every round's aggregations
                extra = {**ray_extra, "on_failure": "recover"}
                done("ray-recover", run_fedsim(raw, Path(tmp) / "recover", extra))
    return report(rows)


def report(rows: dict[str, Measured]) -> int:
    """Print the table, the trajectories and the targets; 1 if trajectories differ."""
    floor = rows["floor"].per_round_s
    raw_s = rows["raw"].per_round_s if "raw" in rows else float("nan")
    reference = rows["floor"].accuracies
    print(
        f"{'contender':14s} {'s/round':>8s} {'÷raw':>6s} {'÷floor':>7s} {'first s':>8s} "
        f"{'setup s':>8s} {'peak MB':>8s} {'+MB':>6s} {'max|Δacc|':>10s} final acc"
    )
    ok = True
    for name, m in rows.items():
        s = m.per_round_s
        diff = max(abs(a - b) for a, b in zip(m.accuracies, reference, strict=True))
        ok &= diff <= ACCURACY_TOLERANCE
        print(
            f"{name:14s} {s:8.3f} {s / raw_s:6.2f} {s / floor:7.2f} {m.times_s[0]:8.2f} "
            f"{m.setup_s:8.2f} {m.peak_bytes / 2**20:8.0f} "
            f"{(m.peak_bytes - m.idle_bytes) / 2**20:6.0f} {diff:10.4f} {m.accuracies[-1]:.4f}",
            flush=True,
        )
    print("(peak MB: PSS of the whole process tree, Ray included; +MB: above the tree before)")
    print("accuracy per round:")
    for name, m in rows.items():
        print(f"  {name:14s} " + " ".join(f"{a:.4f}" for a in m.accuracies))
    print("trajectories agree" if ok else f"TRAJECTORIES DIFFER by more than {ACCURACY_TOLERANCE}")
    if "fedsim-ray" in rows and rows["fedsim-ray"].peak_by_process:
        print("fedsim-ray at its peak, PSS MB by process:")
        for name, size in sorted(rows["fedsim-ray"].peak_by_process.items(), key=lambda kv: -kv[1]):
            print(f"  {size / 2**20:6.0f}  {name}")
    targets = [("fedsim-inline", 1.05), ("fedsim-ray", 1.3)]
    for name, limit in targets:
        if name in rows:
            m = rows[name]
            checks = [
                (f"≤ {limit} x floor", m.per_round_s <= limit * floor),
                ("first round ≤ 3 s", m.times_s[0] <= 3.0),
                ("peak ≤ 1 GB", m.peak_bytes <= 2**30),
            ]
            print(
                f"targets {name}: "
                + ", ".join(f"{t} {'met' if v else 'MISSED'}" for t, v in checks)
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
