"""Reproduce the compute and WiFi fits behind the Raspberry Pi profiles (see docs/profiles.md).

Run ``python hardware_profiles/fit_compute.py`` from the repository root; it prints every
fitted number that the profile files quote. Inputs are the published figures only:

* ``rpi4_train_seconds_per_batch.csv`` -- seconds per training batch (batch 16) of timm
  models on a Raspberry Pi 4 (Flower blog benchmark, 2023).
* MTFL paper Table 4 (Mills et al.) -- time per round and its Down/Client/Up/Server split
  on a testbed of 5 RPi 2B + 5 RPi 3B clients on WiFi.
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CSV = Path("/work/shared/data/profiles/rpi4_train_seconds_per_batch.csv")
RPI4_BATCH = 16
# Plain convolutions and dense matmuls: the layer types of the small MLPs/CNNs used in FL.
RPI4_FAMILY = r"^(resnet|vit_|deit_|mlpmixer)"

# MTFL testbed (paper Sec. 4.5, Table 4): W = 10 clients, B = 20, E = 1.
MTFL_CLIENTS = 10
MTFL_BATCH = 20
MNIST_TRAIN = 60_000
CIFAR10_TRAIN = 50_000
# Table 4 "Independent" rows: 100 % of the round is local training.
MTFL_INDEPENDENT_ROUND_S = {"mnist_2nn": 29.0, "cifar10_cnn": 100.0}
# Table 4 rows used for the WiFi check: (round s, % down, % up, models sent per direction).
MTFL_COMM_ROWS = {
    ("mnist_2nn", "FL(FedAvg)"): (30.0, 5.0, 6.0, 1),
    ("mnist_2nn", "MTFL(FedAvg-Adam)"): (38.0, 11.0, 12.0, 3),
    ("cifar10_cnn", "FL(FedAvg)"): (108.0, 5.0, 5.0, 1),
    ("cifar10_cnn", "MTFL(FedAvg-Adam)"): (136.0, 11.0, 12.0, 3),
}
# Raspberry Pi Foundation launch claim: Pi 3 is 50-60 % faster than Pi 2 (32-bit mode).
RPI3B_OVER_RPI2B = 1.55
# Raspberry Pi Foundation launch claim: Pi 4 CPU ~3x Pi 3.
RPI4_OVER_RPI3B = 3.0


@dataclass(frozen=True)
class LinearFit:
    """A fit ``seconds = intercept_s + work / rate`` and its quality on the fitted rows."""

    rate: float
    intercept_s: float
    rel_errors: tuple[float, ...]
    names: tuple[str, ...]

    @property
    def max_abs_rel_error(self) -> float:
        """Return the largest |predicted / published - 1| over the fitted rows."""
        return float(np.max(np.abs(self.rel_errors)))

    @property
    def median_abs_rel_error(self) -> float:
        """Return the median |predicted / published - 1| over the fitted rows."""
        return float(np.median(np.abs(self.rel_errors)))


def mlp_macs(sizes: list[int]) -> int:
    """Return the multiply-accumulates of one sample through dense layers of these widths."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def mtfl_forward_flops() -> dict[str, float]:
    """Return forward FLOPs per sample (2 x MACs of conv and dense layers) of the MTFL models.

    2NN: 784-200-200-10. CNN: conv 3->32 3x3 (32x32 -> 30x30), pool -> 15x15,
    conv 32->64 3x3 (-> 13x13), pool -> 6x6 (2304 features), dense 2304-512-10.
    BN, ReLU, pooling and biases are not counted (as in the timm GMAC figures).
    """
    nn2 = mlp_macs([784, 200, 200, 10])
    conv1 = 30 * 30 * 32 * (3 * 3 * 3)
    conv2 = 13 * 13 * 64 * (3 * 3 * 32)
    cnn = conv1 + conv2 + mlp_macs([2304, 512, 10])
    return {"mnist_2nn": 2.0 * nn2, "cifar10_cnn": 2.0 * cnn}


def mtfl_model_bytes() -> dict[str, int]:
    """Return float32 bytes of one model as FL(FedAvg) sends it (weights and BN statistics)."""
    nn2 = (784 * 200 + 200) + 4 * 200 + (200 * 200 + 200) + (200 * 10 + 10)
    cnn = (
        (3 * 3 * 3 * 32 + 32)
        + 4 * 32
        + (3 * 3 * 32 * 64 + 64)
        + 4 * 64
        + (2304 * 512 + 512)
        + (512 * 10 + 10)
    )
    return {"mnist_2nn": 4 * nn2, "cifar10_cnn": 4 * cnn}


def _fit(work: np.ndarray, seconds: np.ndarray, names: list[str]) -> LinearFit:
    """Least squares on relative error: minimise sum(((a + work / rate) / seconds - 1) ** 2)."""
    design = np.c_[np.ones_like(work), work] / seconds[:, None]
    (intercept, inv_rate), *_ = np.linalg.lstsq(design, np.ones_like(seconds), rcond=None)
    pred = intercept + work * inv_rate
    return LinearFit(
        rate=float(1.0 / inv_rate),
        intercept_s=float(intercept),
        rel_errors=tuple(float(x) for x in pred / seconds - 1.0),
        names=tuple(names),
    )


def read_rpi4_rows(csv_path: Path = DEFAULT_CSV) -> list[dict[str, str]]:
    """Return the CSV rows that have a published seconds-per-train-batch figure."""
    with csv_path.open(encoding="utf-8") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        return [row for row in reader if row["sec_per_train_batch"]]


def fit_rpi4(csv_path: Path = DEFAULT_CSV, family: str | None = RPI4_FAMILY) -> LinearFit:
    """Fit FLOP rate and per-batch intercept to the RPi 4 timm rows (all rows if no family)."""
    rows = [r for r in read_rpi4_rows(csv_path) if family is None or re.match(family, r["model"])]
    gmacs = np.array([float(r["gmacs_per_img"]) for r in rows])
    seconds = np.array([float(r["sec_per_train_batch"]) for r in rows])
    work = 3.0 * 2.0 * gmacs * 1e9 * RPI4_BATCH
    return _fit(work, seconds, [r["model"] for r in rows])


def mtfl_steps_per_round() -> dict[str, int]:
    """Return local SGD steps of one epoch per client on the MTFL testbed (W = 10, B = 20)."""
    return {
        "mnist_2nn": int(np.ceil(MNIST_TRAIN / MTFL_CLIENTS / MTFL_BATCH)),
        "cifar10_cnn": int(np.ceil(CIFAR10_TRAIN / MTFL_CLIENTS / MTFL_BATCH)),
    }


def fit_rpi2b() -> LinearFit:
    """Solve the two MTFL Independent rows for the slowest client (RPi 2B): rate, overhead."""
    flops = mtfl_forward_flops()
    steps = mtfl_steps_per_round()
    names = ["mnist_2nn", "cifar10_cnn"]
    work = np.array([3.0 * flops[n] * MTFL_BATCH for n in names])
    s_per_step = np.array([MTFL_INDEPENDENT_ROUND_S[n] / steps[n] for n in names])
    return _fit(work, s_per_step, names)


def scaled(fit: LinearFit, speedup: float) -> tuple[float, float]:
    """Return (rate, overhead) of a device ``speedup`` times faster in both terms."""
    return fit.rate * speedup, fit.intercept_s / speedup


def fit_mtfl_wifi() -> dict[str, LinearFit]:
    """Fit ``time = fixed + bytes * 8 / rate`` to the Table 4 download and upload shares."""
    model_bytes = mtfl_model_bytes()
    out = {}
    for direction, col in (("down", 1), ("up", 2)):
        names, bits, seconds = [], [], []
        for (model, scheme), row in MTFL_COMM_ROWS.items():
            names.append(f"{model}/{scheme}")
            bits.append(8.0 * model_bytes[model] * row[3])
            seconds.append(row[0] * row[col] / 100.0)
        out[direction] = _fit(np.array(bits), np.array(seconds), names)
    return out


def fit_mtfl_wifi_shared() -> tuple[float, float, float, float]:
    """Fit one fixed per-transfer time shared by both directions, and the two rates.

    Returns
    -------
    tuple of float
        (fixed seconds, down bits/s, up bits/s, max |relative error| over the 8 shares).
    """
    model_bytes = mtfl_model_bytes()
    rows, seconds = [], []
    for (model, _), row in MTFL_COMM_ROWS.items():
        bits = 8.0 * model_bytes[model] * row[3]
        rows.append([1.0, bits, 0.0])
        seconds.append(row[0] * row[1] / 100.0)
        rows.append([1.0, 0.0, bits])
        seconds.append(row[0] * row[2] / 100.0)
    design, target = np.array(rows), np.array(seconds)
    coef, *_ = np.linalg.lstsq(design / target[:, None], np.ones_like(target), rcond=None)
    err = design @ coef / target - 1.0
    return float(coef[0]), float(1.0 / coef[1]), float(1.0 / coef[2]), float(np.max(np.abs(err)))


def main() -> None:
    """Print every fitted number quoted by the profile files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = parser.parse_args()

    print("== RPi 4: timm training, batch 16 ==")
    for label, family in (("family " + RPI4_FAMILY, RPI4_FAMILY), ("all rows", None)):
        fit = fit_rpi4(args.csv, family)
        print(
            f"{label}: n={len(fit.names)} flops_per_s={fit.rate:.4g} "
            f"intercept_s_per_batch={fit.intercept_s:.4g} "
            f"median|err|={fit.median_abs_rel_error:.1%} max|err|={fit.max_abs_rel_error:.1%}"
        )
    print("\n== MTFL testbed (Table 4) ==")
    print("forward FLOPs/sample:", {k: f"{v:.6g}" for k, v in mtfl_forward_flops().items()})
    print("steps per round:", mtfl_steps_per_round())
    rpi2b = fit_rpi2b()
    print(f"rpi2b: flops_per_s={rpi2b.rate:.4g} overhead_s_per_step={rpi2b.intercept_s:.4g}")
    rate3, over3 = scaled(rpi2b, RPI3B_OVER_RPI2B)
    print(f"rpi3b (x{RPI3B_OVER_RPI2B}): flops_per_s={rate3:.4g} overhead_s_per_step={over3:.4g}")
    over4 = over3 / RPI4_OVER_RPI3B
    print(f"rpi4 overhead (rpi3b / {RPI4_OVER_RPI3B}): overhead_s_per_step={over4:.4g}")
    print("model bytes:", mtfl_model_bytes())
    for direction, fit in fit_mtfl_wifi().items():
        print(
            f"wifi_mtfl {direction}: mbps={fit.rate / 1e6:.4g} fixed_s={fit.intercept_s:.4g} "
            f"max|err|={fit.max_abs_rel_error:.1%}"
        )
    fixed, down, up, err = fit_mtfl_wifi_shared()
    print(
        f"wifi_mtfl shared fixed time: fixed_s={fixed:.4g} down_mbps={down / 1e6:.4g} "
        f"up_mbps={up / 1e6:.4g} max|err|={err:.1%}"
    )


if __name__ == "__main__":
    main()
