"""Lock-step training of the conv models: per-device loop, grouped, vmap, hand-written floor.

Per 32 devices x one epoch (300 synthetic samples each: 15 SGD steps of B = 20, lr 0.05),
three workloads: ``perfit_cnn`` on MNIST-shaped ``(1, 28, 28)`` inputs (Conv2d),
``perfit_cnn`` on HAR-shaped ``(9, 128)`` windows (Conv1d, PerFit's case study) and
``mtfl_cnn`` on CIFAR-shaped ``(3, 32, 32)`` inputs (Conv2d with BatchNorm2d). Contenders:

* ``loop`` -- :func:`fedsim.runtime.training.train_loop`, one device after another;
* ``grouped`` -- :func:`fedsim.runtime.lock_step.train_vectorized` with ``backend="grouped"``
  (:mod:`fedsim.runtime.grouped`, what ``vectorize: true`` runs for these models), chunks
  of ``G`` devices;
* ``vmap`` -- the same with ``backend="vmap"`` (``torch.func.vmap(grad(...))``);
* ``floor`` -- the same network written by hand for ``G`` stacked devices: activations kept
  as ``(B, G*C, ...)``, convolutions grouped (``groups=G``), pooling, ReLU and BatchNorm
  (running statistics included) on that layout directly, the Linear layers as batched
  matrix products, autograd backward, plain SGD; batches gathered beforehand.

Contenders run interleaved, ``--repeats`` times; each figure is the minimum over repeats of
the wall seconds and of the process CPU seconds (one torch thread: CPU seconds are the
compute, what a loaded machine's preemption leaves out). Ratios are of CPU seconds,
against the floor and the loop of the same chunk size measured in the same run.

    python benchmarks/bench_conv.py [--threads 1] [--repeats 3] [--group-sizes 32 8]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim.models import build_model
from fedsim.runtime.lock_step import train_vectorized
from fedsim.runtime.training import DeviceJob, LocalSGD, batch_order, train_loop

DEVICES, SAMPLES, CLASSES = 32, 300, 10
OPT = LocalSGD(lr=0.05, local_epochs=1, batch_size=20)
WORKLOADS: dict[str, tuple[str, tuple[int, ...]]] = {
    "perfit_cnn 1x28x28": ("perfit_cnn", (1, 28, 28)),
    "perfit_cnn 9x128": ("perfit_cnn", (9, 128)),
    "mtfl_cnn 3x32x32 (BN)": ("mtfl_cnn", (3, 32, 32)),
}
State = dict[str, Tensor]


def grouped_forward(model: nn.Sequential, p: State, xb: Tensor) -> Tensor:
    """Return the logits ``(G, B, classes)`` of ``G`` stacked devices on ``xb`` ``(G, B, ...)``.

    Convolutions, pooling, ReLU and BatchNorm act on ``(B, G*C, *spatial)`` (BatchNorm in
    train mode updates the stacked running statistics in place, as the module does);
    Flatten turns it into ``(G, B, features)`` for the Linear layers.
    """
    g = xb.shape[0]
    h = xb.transpose(0, 1).flatten(1, 2)  # (B, G*C, *spatial)
    for name, m in model.named_children():
        key = name + "."
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
            w, b = p[key + "weight"].flatten(0, 1), p[key + "bias"].flatten()
            h = conv(h, w, b, m.stride, m.padding, m.dilation, g)  # type: ignore[arg-type]
        elif isinstance(m, nn.MaxPool1d):
            h = F.max_pool1d(h, m.kernel_size)
        elif isinstance(m, nn.MaxPool2d):
            h = F.max_pool2d(h, m.kernel_size)
        elif isinstance(m, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            h = F.batch_norm(
                h, p[key + "running_mean"].view(-1), p[key + "running_var"].view(-1),
                p[key + "weight"].flatten(), p[key + "bias"].flatten(), True,
                float(m.momentum or 0.1), m.eps,
            )  # fmt: skip
            p[key + "num_batches_tracked"].add_(1)
        elif isinstance(m, nn.Flatten):
            h = h.unflatten(1, (g, -1)).flatten(2).transpose(0, 1)  # (G, B, features)
        elif isinstance(m, nn.Linear):
            # W @ h^T keeps the weight gradient contiguous (G, out, in)
            h = torch.bmm(p[key + "weight"], h.mT).mT + p[key + "bias"].unsqueeze(1)
        else:
            raise NotImplementedError(type(m).__name__)
    return h


def floor_chunk(model: nn.Sequential, state: State, steps: list[tuple[Tensor, Tensor]]) -> State:
    """Train one chunk's stacked devices by hand on pre-gathered batches; return their state."""
    g = steps[0][0].shape[0]
    p = {k: v.unsqueeze(0).expand(g, *v.shape).clone() for k, v in state.items()}
    params = [p[n].requires_grad_() for n, _ in model.named_parameters()]
    for xb, yb in steps:
        logits = grouped_forward(model, p, xb)
        # sum over devices of each device's batch-mean loss: each device gets its own gradient
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum") / yb.shape[1]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for w, gw in zip(params, grads, strict=True):
                w.add_(gw, alpha=-OPT.lr)
    return {k: v.detach() for k, v in p.items()}


def gathered(jobs: list[DeviceJob], x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Return a chunk's batches, ``(G, B, ...)`` per step, in each device's seeded order."""
    orders = [j.train_idx[batch_order(len(j.train_idx), OPT.batch_size, 1, j.seed)] for j in jobs]
    rows = [torch.from_numpy(np.stack([o[s] for o in orders])) for s in range(len(orders[0]))]
    return [(x[r], y[r]) for r in rows]


def check_floor(model: nn.Sequential, state: State, x: Tensor, y: Tensor, jobs: list[DeviceJob]):
    """Return the floor's largest difference from the loop after one step, per unit of step."""
    one = LocalSGD(OPT.lr, 1, OPT.batch_size)
    short = [DeviceJob(j.device_id, j.train_idx[:20], j.seed) for j in jobs[:3]]
    ref = train_loop(model, state, x, y, short, one)
    mine = floor_chunk(model, state, gathered(short, x, y))
    worst = 0.0
    for i, r in enumerate(ref):
        for k, v in state.items():
            if v.is_floating_point():
                step = (r.state[k] - v).abs().max().clamp_min(1e-30)
                worst = max(worst, float((mine[k][i] - r.state[k]).abs().max() / step))
    return worst


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(label: str, args: argparse.Namespace) -> list[str]:
    """Time every contender on one workload; return its markdown table rows."""
    name, shape = WORKLOADS[label]
    torch.manual_seed(0)
    model = build_model(name, shape, CLASSES)
    assert isinstance(model, nn.Sequential)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(DEVICES * SAMPLES, *shape, generator=g)
    y = torch.randint(0, CLASSES, (DEVICES * SAMPLES,), generator=g)
    jobs = [
        DeviceJob(d, np.arange(d * SAMPLES, (d + 1) * SAMPLES, dtype=np.int64), 100 + d)
        for d in range(DEVICES)
    ]
    worst = check_floor(model, state, x, y, jobs)
    print(f"{label}: floor - loop after one step <= {worst:.1e} of the step", flush=True)
    contenders: dict[tuple[str, int], Callable[[], object]] = {
        ("loop", 1): lambda: train_loop(model, state, x, y, jobs, OPT)
    }
    for gsz in args.group_sizes:
        chunks = [gathered(jobs[s : s + gsz], x, y) for s in range(0, DEVICES, gsz)]
        for backend in ("grouped", "vmap"):
            contenders[(backend, gsz)] = lambda gsz=gsz, backend=backend: train_vectorized(
                model, state, x, y, jobs, OPT, backend=backend, group_size=gsz
            )
        contenders[("floor", gsz)] = lambda chunks=chunks: [
            floor_chunk(model, state, c) for c in chunks
        ]
    times: dict[tuple[str, int], list[tuple[float, float]]] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for key, fn in contenders.items():
            times[key].append(timed(fn))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}
    rows = []
    for (kind, gsz), (wall, cpu) in best.items():
        chunk, vs_floor = "-", "-"
        if kind != "loop":
            chunk, vs_floor = str(gsz), f"{cpu / best[('floor', gsz)][1]:.2f}"
        rows.append(
            f"| {label} | {kind} | {chunk} | {wall:.2f} | {cpu:.2f} | {vs_floor} | "
            f"{cpu / best[('loop', 1)][1]:.2f} |"
        )
    print(f"  done; load average {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[32, 8])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(
        f"{DEVICES} devices x {SAMPLES} samples (15 steps of B {OPT.batch_size}, lr {OPT.lr}); "
        f"{args.threads} torch thread(s); min over {args.repeats} interleaved repeats; "
        f"load average at start {load:.1f} on {os.cpu_count()} CPUs"
    )
    rows = [row for label in args.workloads for row in measure(label, args)]
    print()
    print("| workload | contender | chunk | wall s | CPU s | ÷ floor | ÷ loop |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
