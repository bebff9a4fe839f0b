"""Lock-step against the loop with BatchNorm, and the loop against itself on 2 threads.

How far lock-step training lands from the per-device loop, against how far the loop lands
from itself on another number of torch threads (README, "Runtimes").

MNIST from ``$FEDSIM_DATA`` (or ``../shared/data``), ``mtfl_2nn`` (BatchNorm after the first
ReLU), FedAvg's local SGD at the shipped lr 0.3, B 20, one epoch of 300 samples on each of
40 devices, all from one initial model, float32:

    FEDSIM_DATA=../shared/data python analysis/bn_sensitivity.py [--model mtfl_2nn]

It prints, per tensor, the largest difference over the devices relative to the tensor's
largest value, and the devices' test accuracies' differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import shared_data_dir  # noqa: E402

from fedsim.data import load_dataset  # noqa: E402
from fedsim.models import build_model  # noqa: E402
from fedsim.runtime.lock_step import train_vectorized  # noqa: E402
from fedsim.runtime.training import DeviceJob, DeviceResult, LocalSGD, train_loop  # noqa: E402


def main() -> int:
    """Train both ways and print the differences."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="mtfl_2nn")
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.3)
    args = ap.parse_args()
    ds = load_dataset("mnist", shared_data_dir(), 1)
    n = args.devices
    x = torch.as_tensor(ds.x_train[: n * 300])
    y = torch.as_tensor(ds.y_train[: n * 300]).long()
    torch.manual_seed(0)
    model = build_model(args.model, ds.input_shape, 10)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    jobs = [DeviceJob(d, np.arange(d * 300, d * 300 + 300, dtype=np.int64), 100 + d)
            for d in range(n)]  # fmt: skip
    opt = LocalSGD(args.lr, 1, 20)
    torch.set_num_threads(1)
    loop = train_loop(model, base, x, y, jobs, opt)
    lock = train_vectorized(model, base, x, y, jobs, opt, backend="fused")
    torch.set_num_threads(2)
    loop_2 = train_loop(model, base, x, y, jobs, opt)

    def rel(a: list[DeviceResult], b: list[DeviceResult], k: str) -> float:
        return max(
            float((p.state[k].double() - q.state[k].double()).abs().max())
            / float(p.state[k].double().abs().max() + 1e-12)
            for p, q in zip(a, b, strict=True)
        )

    def accuracies(results: list[DeviceResult]) -> np.ndarray:
        xt, yt = torch.as_tensor(ds.x_test), torch.as_tensor(ds.y_test).long()
        out = []
        for r in results:
            model.load_state_dict(r.state)
            model.eval()
            with torch.no_grad():
                out.append(float((model(xt).argmax(1) == yt).float().mean()))
        return np.array(out)

    print(f"{args.model}, lr {args.lr}, B 20, one epoch of 300 samples, {n} devices, float32")
    print(f"{'tensor':20s} {'lock-step vs loop':>18s} {'loop 2 vs 1 thread':>19s}")
    for k, v in base.items():
        if v.is_floating_point():
            print(f"{k:20s} {rel(loop, lock, k):18.2e} {rel(loop, loop_2, k):19.2e}")
    a, b, c = accuracies(loop), accuracies(lock), accuracies(loop_2)
    for name, other in (("lock-step vs loop", b), ("loop 2 vs 1 thread", c)):
        d = np.abs(a - other)
        print(f"per-device test accuracy, {name}: max {d.max():.4f}, mean {d.mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
