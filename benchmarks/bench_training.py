"""Seconds per round of local training: raw PyTorch loop, train_loop, train_vectorized, floor.

Standard workload: 200 devices x 300 samples of MNIST-shaped synthetic data (784 features,
10 classes), 2NN 784-200-200-10 with and without BatchNorm1d, lr 0.1, E = 1, B = 20
(3,000 SGD steps per round). Each timing is the best of ``--repeats`` runs.

    python benchmarks/bench_training.py [--threads 1 2] [--repeats 2] [--vmap]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from fedsim.runtime.fused import _fused_plan, _fused_train
from fedsim.runtime.lock_step import DEFAULT_GROUP_SIZE, train_vectorized
from fedsim.runtime.training import DeviceJob, LocalSGD, batch_order, train_loop

DEVICES, SAMPLES, FEATURES, CLASSES = 200, 300, 784, 10
OPT = LocalSGD(lr=0.1, local_epochs=1, batch_size=20)


def two_nn(bn: bool, seed: int) -> nn.Module:
    mid: list[nn.Module] = [nn.BatchNorm1d(200)] if bn else []
    model = nn.Sequential(
        nn.Linear(FEATURES, 200),
        nn.ReLU(),
        *mid,
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, CLASSES),
    )
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            bound = m.in_features**-0.5
            nn.init.uniform_(m.weight, -bound, bound, generator=g)
            nn.init.uniform_(m.bias, -bound, bound, generator=g)
    return model


def raw_loop(
    model: nn.Module,
    state: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: list[DeviceJob],
    drop_singleton: bool,
) -> list[dict]:
    """Plain PyTorch: one device after another, torch.optim.SGD, index-based batches."""
    model.train()
    out = []
    for job in jobs:
        model.load_state_dict(state)
        sgd = torch.optim.SGD(model.parameters(), lr=OPT.lr)
        for pos in batch_order(
            len(job.train_idx),
            OPT.batch_size,
            OPT.local_epochs,
            job.seed,
            drop_singleton=drop_singleton,
        ):
            rows = torch.from_numpy(job.train_idx[pos])
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
        out.append({k: v.clone() for k, v in model.state_dict().items()})
    return out


def floor_prepared(
    model: nn.Module,
    state: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: list[DeviceJob],
    group: int,
) -> Callable[[], None]:
    """Return the fused kernel alone: batches pre-gathered, chunk states pre-stacked."""
    plan = _fused_plan(model)
    assert plan is not None
    chunks = []
    for start in range(0, len(jobs), group):
        chunk = jobs[start : start + group]
        orders = [
            j.train_idx[batch_order(len(j.train_idx), OPT.batch_size, 1, j.seed)] for j in chunk
        ]
        rows = [torch.from_numpy(np.stack([o[s] for o in orders])) for s in range(len(orders[0]))]
        chunks.append(([x[r] for r in rows], [y[r] for r in rows]))

    def run() -> None:
        for xs, ys in chunks:
            n = xs[0].shape[0]
            stacked = {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in state.items()}
            _fused_train(plan, stacked, zip(xs, ys, strict=True), OPT)

    return run


def gemm_only(group: int) -> Callable[[], None]:
    """Return the irreducible batched GEMMs of a round (forward, input grads, weight updates)."""
    g = torch.Generator().manual_seed(0)
    sizes = [(FEATURES, 200), (200, 200), (200, CLASSES)]
    ws = [torch.randn(group, o, i, generator=g) * 0.01 for i, o in sizes]
    xs = [torch.randn(group, OPT.batch_size, i, generator=g) for i, _ in sizes]
    gs = [torch.randn(group, OPT.batch_size, o, generator=g) for _, o in sizes]
    steps = DEVICES // group * (SAMPLES // OPT.batch_size)

    def run() -> None:
        for _ in range(steps):
            for k, (w, xi, gi) in enumerate(zip(ws, xs, gs, strict=True)):
                torch.bmm(xi, w.mT)
                if k:
                    torch.bmm(gi, w)
                w.baddbmm_(gi.mT, xi, alpha=-1e-6)

    return run


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE)
    parser.add_argument("--vmap", action="store_true", help="also time the vmap backend (slow)")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    x = torch.rand(DEVICES * SAMPLES, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (DEVICES * SAMPLES,), generator=g)
    perm = np.random.default_rng(0).permutation(DEVICES * SAMPLES).astype(np.int64)
    jobs = [
        DeviceJob(d, perm[d * SAMPLES : (d + 1) * SAMPLES], seed=10_000 + d) for d in range(DEVICES)
    ]
    print(
        f"{DEVICES} devices x {SAMPLES} samples, 2NN, lr {OPT.lr}, E {OPT.local_epochs}, "
        f"B {OPT.batch_size}; group size {args.group_size}; best of {args.repeats}; "
        f"seconds per round"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for bn in (False, True):
            model = two_nn(bn, seed=1)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            rep, gsz = args.repeats, args.group_size
            t_raw = best(partial(raw_loop, model, state, x, y, jobs, bn), rep)
            t_loop = best(partial(train_loop, model, state, x, y, jobs, OPT), rep)
            t_vec = best(
                partial(train_vectorized, model, state, x, y, jobs, OPT, group_size=gsz), rep
            )
            t_floor = best(floor_prepared(model, state, x, y, jobs, gsz), rep)
            t_gemm = best(gemm_only(gsz), rep)
            line = (
                f"threads={threads} bn={bn!s:5} raw={t_raw:.3f} train_loop={t_loop:.3f} "
                f"vectorized={t_vec:.3f} floor={t_floor:.3f} gemm_only={t_gemm:.3f} | "
                f"vec/raw={t_vec / t_raw:.2f} vec/floor={t_vec / t_floor:.2f}"
            )
            if args.vmap:
                t_vmap = best(
                    partial(
                        train_vectorized,
                        model,
                        state,
                        x,
                        y,
                        jobs,
                        OPT,
                        backend="vmap",
                        group_size=gsz,
                    ),
                    1,
                )
                line += f" vmap={t_vmap:.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
