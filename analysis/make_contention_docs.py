"""Show that the upload phase grows linearly in N once an edge's shared uplink binds.

Usage (from the repository root)::

    python analysis/make_contention_docs.py [--seeds 10] [--capacity 160] [--out DIR]

One edge (``home_gateway``) serves N identical ``rpi4`` devices on ``wifi``; its WiFi
uplink carries ``--capacity`` Mbps (``topology.edges[0].access_mbps.wifi.up``), each
device uploads at most the link's median rate r = 20 Mbps, so the capacity binds from
N* = capacity / r on. Every device trains and uploads in the one round (``learning:
false``, no participants limit, no deadline, always on). The upload of one device then
takes ``rtt + bits / min(r, capacity / N)``: flat up to N*, linear in N beyond.

Two profile sets: a temporary copy of ``hardware_profiles/`` with the spread taken out
(wifi ``sigma`` and ``device_sigma`` 0, rpi4 compute ``jitter_sigma`` 0), where the runs
must match the law to 1e-9 (the script exits with 1 otherwise), and the shipped profiles
with their spread, run with ``--seeds`` seeds. Each with ``network.contention`` on and off.
Run folders go to a temporary folder (or ``--out``, kept). Writes
``docs/img/contention_upload.png`` and ``.svg`` and ``docs/img/contention_numbers.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fedsim.analysis import save_figure, to_markdown  # noqa: E402
from fedsim.api import check, run  # noqa: E402
from fedsim.config import Scenario, scenario_from_dict  # noqa: E402
from fedsim.profiles import load_profiles  # noqa: E402

PROFILES = ROOT / "hardware_profiles"
LINK = "wifi"
DEVICE = "rpi4"
EDGE = "home_gateway"
MODEL = "perfit_3nn"
SAMPLES = 50
CAPACITY_MBPS = 160.0
NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SEED = 1
FLAT, SPREAD = "no spread", "shipped profiles"
COMMAND = "python analysis/make_contention_docs.py"


def flat_profiles(dest: Path, src: Path = PROFILES, link: str = LINK, device: str = DEVICE) -> Path:
    """Copy the profiles folder to ``dest`` with the spread of ``link`` and ``device`` removed.

    The link's per-transfer ``sigma`` (both directions) and lasting ``device_sigma`` and the
    device's compute ``jitter_sigma`` become 0; everything else is unchanged.
    """
    shutil.copytree(src / "devices", dest / "devices")
    shutil.copytree(src / "networks", dest / "networks")
    link_file = dest / "networks" / f"{link}.yaml"
    spec = yaml.safe_load(link_file.read_text())
    for direction in ("up_mbps", "down_mbps"):
        spec[direction]["sigma"] = {"value": 0.0, "source": "set to 0 for the clean law"}
    spec["device_sigma"] = {"value": 0.0, "source": "set to 0 for the clean law"}
    link_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    device_file = dest / "devices" / f"{device}.yaml"
    spec = yaml.safe_load(device_file.read_text())
    spec["compute"]["jitter_sigma"] = {"value": 0.0, "source": "set to 0 for the clean law"}
    device_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def scenario(n: int, seed: int, contention: bool, capacity_mbps: float = CAPACITY_MBPS) -> Scenario:
    """Return the one-edge, one-round scenario with ``n`` devices uploading at once."""
    raw: dict[str, Any] = {
        "name": f"contention-n{n}",
        "seed": seed,
        "data": {"dataset": "digits", "samples_per_device": SAMPLES},
        "model": MODEL,
        "topology": {
            "cloud": {"hardware": "cloud_server", "backhaul": "wan"},
            "edges": [
                {
                    "name": "e0",
                    "hardware": EDGE,
                    "backhaul": "wan",
                    "access_mbps": {LINK: {"up": capacity_mbps}},
                    "devices": [{"hardware": DEVICE, "link": LINK, "count": n}],
                }
            ],
        },
        "algorithm": {"use": "fedavg", "params": {"lr": 0.1, "local_epochs": 1, "batch_size": 10}},
        "availability": {"kind": "always_on"},
        "network": {"contention": contention},
        "stop": {"max_rounds": 1},
        "learning": False,
    }
    return scenario_from_dict(raw, f"contention n={n}")


@dataclass(frozen=True)
class Law:
    """The expected upload of one of N devices that start uploading together.

    Attributes
    ----------
    rtt_s : float
        The link's round trip, paid once before the data flows.
    rate_mbps : float
        One device's own upload rate (the link's median; exact without spread).
    capacity_mbps : float
        The edge's shared uplink capacity.
    bits : float
        The upload payload.
    """

    rtt_s: float
    rate_mbps: float
    capacity_mbps: float
    bits: float

    @property
    def n_star(self) -> float:
        """Return the device count from which the capacity binds."""
        return self.capacity_mbps / self.rate_mbps

    def mbps(self, n: Any, contention: bool = True) -> Any:
        """Return each device's effective rate, ``min(r, C / N)`` (``r`` without contention)."""
        n = np.asarray(n, dtype=float)
        if not contention:
            return np.full_like(n, self.rate_mbps)
        return np.minimum(self.rate_mbps, self.capacity_mbps / n)

    def upload_s(self, n: Any, contention: bool = True) -> Any:
        """Return ``rtt + bits / min(r, C / N)``."""
        return self.rtt_s + self.bits / (self.mbps(n, contention) * 1e6)

    def shared_s(self, n: Any) -> Any:
        """Return the seconds each device loses to sharing, ``bits/(C/N) - bits/r`` or 0."""
        return self.upload_s(n) - self.upload_s(n, contention=False)


def law(profiles_dir: Path, capacity_mbps: float = CAPACITY_MBPS) -> Law:
    """Return the law for the scenario on ``profiles_dir`` (payload as the run computes it)."""
    link = load_profiles(profiles_dir).link(LINK)
    payload = check(scenario(1, SEED, True, capacity_mbps), profiles_dir=profiles_dir).payloads
    return Law(link.rtt_s, link.up_mbps_median, capacity_mbps, payload.upload_bytes * 8.0)


def _one(
    n: int, seed: int, contention: bool, profiles_dir: Path, out: Path, capacity_mbps: float
) -> dict[str, Any]:
    res = run(scenario(n, seed, contention, capacity_mbps), out, profiles_dir=profiles_dir)
    d = res.device_rounds
    r = res.rounds.iloc[0]
    if len(d) != n or not (d["status"] == "completed").all():
        raise RuntimeError(f"{out}: expected {n} completed devices, got {d['status'].tolist()}")
    return {
        "n": n,
        "seed": seed,
        "contention": contention,
        "upload_mean_s": float(d["upload_s"].mean()),
        "upload_max_s": float(d["upload_s"].max()),
        "up_shared_mean_s": float(d["up_shared_s"].mean()),
        "up_mbps_mean": float(d["up_mbps"].mean()),
        "round_upload_s": float(r["upload_s"]),
        "round_up_shared_s": float(r["up_shared_s"]),
    }


def measure(
    work: Path,
    ns: Sequence[int] = NS,
    seeds: Sequence[int] = (),
    capacity_mbps: float = CAPACITY_MBPS,
    profiles: Path = PROFILES,
) -> tuple[pd.DataFrame, Law]:
    """Run every point; return one row per run and the no-spread law.

    The no-spread series (a spread-free copy of ``profiles`` under ``work``) runs once per
    N with seed 1; the shipped-profile series once per N and seed in ``seeds`` (none if
    empty). Both with contention on and off. Run folders go under ``work``.
    """
    flat = flat_profiles(work / "profiles", profiles)
    rows = []
    plan = [(FLAT, flat, SEED)] + [(SPREAD, profiles, s) for s in seeds]
    for series, pdir, seed in plan:
        for contention in (True, False):
            for n in ns:
                tag = f"{'flat' if series == FLAT else 'spread'}-{'on' if contention else 'off'}"
                out = work / "runs" / f"{tag}-n{n}-s{seed}"
                rows.append(
                    {"series": series, **_one(n, seed, contention, pdir, out, capacity_mbps)}
                )
    return pd.DataFrame(rows), law(flat, capacity_mbps)


def law_error(frame: pd.DataFrame, lw: Law) -> float:
    """Return the largest relative error of the no-spread runs against the law.

    Over per-device mean and max ``upload_s``, the round's ``upload_s``, ``up_mbps``, and
    (absolute, in units of the upload time) ``up_shared_s``.
    """
    f = frame[frame["series"] == FLAT]
    errs = []
    for contention in (True, False):
        g = f[f["contention"] == contention]
        n = g["n"].to_numpy()
        want = lw.upload_s(n, contention)
        for col in ("upload_mean_s", "upload_max_s", "round_upload_s"):
            errs.append(np.abs(g[col].to_numpy() / want - 1))
        errs.append(np.abs(g["up_mbps_mean"].to_numpy() / lw.mbps(n, contention) - 1))
        shared = lw.shared_s(n) if contention else np.zeros(len(n))
        errs.append(np.abs(g["up_shared_mean_s"].to_numpy() - shared) / want)
        errs.append(np.abs(g["round_up_shared_s"].to_numpy() / n - shared) / want)
    return float(max(e.max() for e in errs))


def _spread_stats(frame: pd.DataFrame, contention: bool) -> pd.DataFrame:
    g = frame[(frame["series"] == SPREAD) & (frame["contention"] == contention)]
    return g.groupby("n")[["upload_mean_s", "upload_max_s"]].agg(["median", "min", "max"])


def plot(frame: pd.DataFrame, lw: Law) -> Figure:
    """Return the two-panel figure: no spread (a), shipped profiles with spread (b)."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes: list[Axes] = list(fig.subplots(1, 2, sharey=True))
    ns = np.array(sorted(frame["n"].unique()), dtype=float)
    grid = np.geomspace(ns.min(), ns.max(), 400)
    on_c, off_c = "tab:blue", "tab:orange"
    for ax in axes:
        ax.plot(grid, lw.upload_s(grid), "k--", lw=1.2, label="law: rtt + bits / min(r, C/N)")
        ax.plot(grid, lw.upload_s(grid, False), ":", color="grey", lw=1.2, label="rtt + bits / r")
        ax.axvline(lw.n_star, color="tab:red", lw=1, alpha=0.7)
        ax.text(
            lw.n_star * 1.08, 0.02, f"N* = C/r = {lw.n_star:g}", color="tab:red",
            transform=ax.get_xaxis_transform(), va="bottom",
        )  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [f"{int(n)}" for n in ns])
        ax.set_xlabel("N devices uploading at once to one edge")
        ax.grid(True, which="both", alpha=0.3)

    ax = axes[0]
    flat = frame[frame["series"] == FLAT]
    for contention, color, name in ((True, on_c, "contention on"), (False, off_c, "off")):
        g = flat[flat["contention"] == contention].sort_values("n")
        ax.plot(g["n"], g["upload_max_s"], "o", ms=10, mfc="none", color=color,
                label=f"{name}: max over devices")  # fmt: skip
        ax.plot(g["n"], g["upload_mean_s"], "o", ms=4, color=color,
                label=f"{name}: mean over devices")  # fmt: skip
    ax.set_ylabel("upload phase per device, s (virtual)")
    ax.set_title(f"(a) spread removed: {LINK} sigma = device_sigma = 0, {DEVICE} jitter = 0",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1]
    seeds = frame[frame["series"] == SPREAD]["seed"].nunique()
    for contention, color, name in ((False, off_c, "off"), (True, on_c, "contention on")):
        st = _spread_stats(frame, contention)
        if st.empty:
            continue
        x = st.index.to_numpy()
        for col, style, what in (("upload_max_s", "-", "max"), ("upload_mean_s", "--", "mean")):
            ax.plot(x, st[(col, "median")], style, marker=".", color=color,
                    label=f"{name}: {what} over devices")  # fmt: skip
            ax.fill_between(x, st[(col, "min")], st[(col, "max")], color=color, alpha=0.15)
    ax.set_title(f"(b) shipped profiles with spread: median (band: range) of {seeds} seeds",
                 fontsize=10)  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    order = [0, 1, 4, 5, 2, 3]  # the laws, then contention on, then off
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8,
              loc="upper left")  # fmt: skip
    fig.suptitle(
        f"Upload phase vs N: {DEVICE} on {LINK} (r = {lw.rate_mbps:g} Mbps), edge uplink "
        f"C = {lw.capacity_mbps:g} Mbps, {MODEL} update of {lw.bits / 8 / 1e3:,.0f} kB, "
        f"rtt {lw.rtt_s * 1e3:g} ms"
    )
    return fig


def numbers(frame: pd.DataFrame, lw: Law, err: float, command: str, seconds: float) -> str:
    """Return the markdown of ``docs/img/contention_numbers.md``."""
    flat = frame[frame["series"] == FLAT]
    on = flat[flat["contention"]].set_index("n").sort_index()
    off = flat[~flat["contention"]].set_index("n").sort_index()
    n = on.index.to_numpy()

    def sec(values: Any) -> list[str]:
        return [f"{v:.6f}" for v in values]

    table = pd.DataFrame(
        {
            "N": n,
            "upload_s (mean = max)": sec(on["upload_mean_s"]),
            "expected upload_s": sec(lw.upload_s(n)),
            "up_shared_s per device": sec(on["up_shared_mean_s"]),
            "expected up_shared_s": sec(lw.shared_s(n)),
            "up_mbps": [f"{v:.6g}" for v in on["up_mbps_mean"]],
            "upload_s, contention off": sec(off.loc[n, "upload_mean_s"]),
        }
    )
    seeds = frame[frame["series"] == SPREAD]["seed"].nunique()
    lines = [
        "# Upload phase vs N on one shared edge uplink\n",
        f"Made by `{command}` on {dt.date.today().isoformat()} ({seconds:.0f} s wall).\n",
        "![upload phase vs N](contention_upload.png)\n",
        f"One edge ({EDGE}) serves N {DEVICE} devices on {LINK}, all uploading in the same "
        f"round (`learning: false`, `data.samples_per_device: {SAMPLES}`, no participants "
        f"limit, no deadline, always on). The edge's {LINK} uplink carries C = "
        f"{lw.capacity_mbps:g} Mbps (`topology.edges[0].access_mbps.{LINK}.up`); one device "
        f"uploads at most r = {lw.rate_mbps:g} Mbps (the {LINK} median), so the capacity "
        f"binds from N* = C / r = {lw.n_star:g}. The {MODEL} update is "
        f"{lw.bits / 8:,.0f} bytes, the round trip {lw.rtt_s * 1e3:g} ms. Law: "
        "`upload_s = rtt + bits / min(r, C/N)`, `up_shared_s = upload_s - (rtt + bits / r)`, "
        "`up_mbps = min(r, C/N)`.\n",
        f"Spread removed (a copy of `hardware_profiles/` with {LINK} `sigma` and "
        f"`device_sigma` = 0 and {DEVICE} `jitter_sigma` = 0), seed {SEED}, one round per N; "
        "measured columns are per-device means from `device_rounds.csv` (the max over "
        "devices equals the mean):\n",
        to_markdown(table),
        f"Largest relative error against the law (upload_s mean, max and `rounds.csv`, "
        f"up_mbps, up_shared_s; contention on and off): **{err:.1e}**.\n",
    ]
    if seeds:
        st_on, st_off = _spread_stats(frame, True), _spread_stats(frame, False)
        spread = pd.DataFrame(
            {
                "N": st_on.index.to_numpy(),
                "mean upload_s": st_on[("upload_mean_s", "median")].to_numpy(),
                "max upload_s": st_on[("upload_max_s", "median")].to_numpy(),
                "law": lw.upload_s(st_on.index.to_numpy()),
                "mean upload_s, off": st_off[("upload_mean_s", "median")].to_numpy(),
                "max upload_s, off": st_off[("upload_max_s", "median")].to_numpy(),
            }
        )
        lines += [
            f"Shipped profiles (with their spread), medians over {seeds} seed(s) of each run's "
            "per-device mean and max:\n",
            to_markdown(spread),
            "With spread, device rates differ (lognormal around r), so max-min sharing binds "
            "gradually around N*: devices slower than the fair share keep their own rate and "
            "the faster ones split the rest. Well above N* every device's rate is above C/N "
            "and the phase follows the law; the mean sits slightly below it because compute "
            "jitter staggers the upload starts. Without contention the mean stays flat while "
            "the max (the slowest of N draws) creeps up with N.\n",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the points, check the law, write the figure and the numbers; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the shipped-profile series")
    parser.add_argument("--capacity", type=float, default=CAPACITY_MBPS, help="edge uplink, Mbps")
    parser.add_argument("--max-n", type=int, default=NS[-1])
    parser.add_argument("--img", type=Path, default=ROOT / "docs/img")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args(argv)

    ns = [n for n in NS if n <= args.max_n]
    seeds = list(range(SEED, SEED + args.seeds))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedsim-contention-") as tmp:
        work = args.out if args.out is not None else Path(tmp)
        frame, lw = measure(work, ns, seeds, args.capacity)
    seconds = time.perf_counter() - t0
    err = law_error(frame, lw)

    command = COMMAND + (" " + " ".join(argv) if argv else "")
    if argv is None and len(sys.argv) > 1:
        command = COMMAND + " " + " ".join(sys.argv[1:])
    text = numbers(frame, lw, err, command, seconds)
    args.img.mkdir(parents=True, exist_ok=True)
    (args.img / "contention_numbers.md").write_text(text)
    written = save_figure(plot(frame, lw), args.img / "contention_upload")
    print(text)
    print("figures: " + ", ".join(str(p) for p in written))
    if err > 1e-9:
        print(f"FAILED: the no-spread runs miss the law by {err:.2e} (relative)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
