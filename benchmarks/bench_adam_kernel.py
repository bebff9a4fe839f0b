"""Device Adam's kernel on stacked devices: one tensor per device against one stacked tensor.

The lock-step Adam step (``fedsim.runtime.optim.LocalAdam``) passes the kernel of
``torch.optim.Adam(fused=True)`` either one view per device and parameter or, when the
devices' step counts agree, each weight matrix stacked whole. This prints milliseconds per
step of the MTFL 2NN's parameters (199,210 per device) for both, at several chunk sizes, and
the bandwidth the stacked call reaches (7 streams of 4 B per weight: p, g, m, v read; p, m,
v written).

    python benchmarks/bench_adam_kernel.py [--threads 1] [--repeat 50]
"""

from __future__ import annotations

import argparse
import time

import torch

#: the MTFL 2NN's trainable tensors (784-200-200-10 with BatchNorm)
SHAPES = [(200, 784), (200,), (200,), (200,), (200, 200), (200,), (200,), (200,), (10, 200), (10,)]
WEIGHTS = sum(torch.Size(s).numel() for s in SHAPES)


def step_ms(devices: int, stacked: bool, repeat: int) -> float:
    """Return the median milliseconds of one Adam step over ``devices`` stacked devices."""
    gen = torch.Generator().manual_seed(0)
    tensors = [[torch.randn(devices, *s, generator=gen) for s in SHAPES] for _ in range(4)]
    tensors[3] = [t.abs() for t in tensors[3]]  # second moments are non-negative
    step = torch.tensor(3.0)
    if stacked:
        p, g, m, v = tensors
        st = [step] * len(SHAPES)
    else:
        p, g, m, v = ([t[i] for i in range(devices) for t in ts] for ts in tensors)
        st = [step] * len(p)
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        torch._fused_adam_(
            p, g, m, v, [], st, amsgrad=False, lr=0.003, beta1=0.9, beta2=0.999,
            weight_decay=0.0, eps=1e-7, maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])  # the first call warms up
    return 1e3 * times[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    """Print a table of per-device views against stacked tensors."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}; {WEIGHTS} weights per device")
    print("| devices | per-device views (ms) | stacked (ms) | ÷ | stacked GB/s |")
    print("|---|---|---|---|---|")
    for devices in (1, 4, 8, 16, 32):
        views = step_ms(devices, False, args.repeat)
        whole = step_ms(devices, True, args.repeat)
        gbs = 7 * 4 * WEIGHTS * devices / (whole * 1e-3) / 1e9
        print(f"| {devices} | {views:.2f} | {whole:.2f} | {views / whole:.2f} | {gbs:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
