"""Driver cost as the population grows: systems-only runs of 10^3 ... 10^6 devices.

Run: python benchmarks/bench_scale.py [--rounds 6] [--per-round 1000] [--max-devices 1000000]
         [--contended-only] [--contended-devices 10000 100000] [--baseline DIR]

Each population runs in its own process (so its peak memory is its own): the quickstart
topology resized to N devices, ``learning: false`` with ``data.samples_per_device`` (no
partition), model digits_mlp, K devices per round (no deadline, no over-selection), once
with ``always_on`` and once with ``on_off`` availability (mean on 60 s, off 20 s). Prints
setup seconds, driver milliseconds per round (median over rounds after the first) and the
part of it spent in the SimPy collection phase (every selected device's process, from the
round's start to its close), devices simulated per second, peak RSS of the process and
how much of it the run added beyond the imports, and setup time and cost per simulated
device relative to the
10^3-device case (with on/off availability fewer than K devices of a small population
are on line, so the per-device cost is the fair comparison). These two sections keep the
quickstart's default ``network.contention: true``: its 980 resized rpi4s share one WiFi
access point.

The contended section (``--contended-only`` runs it alone, in about a minute) isolates the
cost of shared capacities: a population of 10^4 devices (``--contended-devices``), all
``phone_mid`` on ``4g``, spread evenly over 1 edge or over 10 edges (``edge_server``, ``wan``
backhaul), K = 1,000 devices per round, always on, with ``network.contention: true`` and
``false``. Phones on LTE under operator edges are the deployment where a thousand devices
per edge is plausible, and 4g's wide per-device rate spread (draw log-sigma 0.5, lasting
device log-sigma 0.5) puts caps on both sides of the fair level; the 4g profile's shared
capacity (30 Mbps up, 100 down, per edge) against a 6 / 13 Mbps median device rate makes
~1,000 uploads under one edge strongly contended and ~100 under each of 10 edges less so.
Per configuration it prints driver and SimPy milliseconds per round (medians after the
first round), the ratio contended / uncontended of driver time per topology and whether it
meets the target "contended <= 2 x uncontended", and how much the sharing bound: the mean
``up_shared_s`` and ``down_shared_s`` per device-round (seconds a transfer lost to sharing),
the mean virtual round length, and the most flows any shared resource held at once.
``--baseline DIR`` adds an uncontended row run by an older fedsim tree in DIR (e.g.
``git archive 074c41c | tar -x -C DIR``; its own profiles, no ``network`` key).
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OTHER_DEVICES = 20  # the quickstart's other three device groups (5 + 10 + 5)


def _rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_collection() -> tuple[list[float], list[int]]:
    """Wrap ``fedsim.sim.simulation.run_round`` to time each round's SimPy collection phase.

    Returns the list the seconds of each round go to, and one holding (after every round)
    the most flows any shared resource has held at once so far (when the driver passes a
    :class:`fedsim.sim.network.Network`, which has ``busiest``).
    """
    import fedsim.sim.simulation as simulation

    collection_s: list[float] = []
    busiest: list[int] = []
    run_round = simulation.run_round

    def timed_round(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        """The SimPy collection phase of a round, timed from its start to its end."""
        t0 = time.perf_counter()
        timing = yield from run_round(*args, **kwargs)
        collection_s.append(time.perf_counter() - t0)
        links = args[4] if len(args) > 4 else kwargs.get("links")
        if hasattr(links, "busiest"):
            busiest.append(links.busiest())
        return timing

    simulation.run_round = timed_round  # type: ignore[assignment]
    return collection_s, busiest


def one(devices: int, kind: str, rounds: int, per_round: int, out: Path) -> dict[str, float]:
    """Run one configuration in this process; return its figures."""
    from fedsim.api import run  # imported here so the baseline RSS includes the libraries

    collection_s, _ = _time_collection()
    base_mb = _rss_mb()
    overrides = [
        "learning=false",
        f"topology.edges.0.devices.0.count={devices - OTHER_DEVICES}",
        f"rounds.participants={min(per_round, devices)}",
        "rounds.over_selection=1.0",
        "rounds.deadline_s=null",
        "data.samples_per_device=50",
        "data.samples_sigma=0.5",
        f"availability.kind={kind}",
        f"stop.max_rounds={rounds}",
        "stop.target_accuracy=null",
    ]
    res = run(REPO / "scenarios" / "quickstart.yaml", out, overrides)
    timings = json.loads((res.path / "timings.json").read_text())
    per_round_s = timings["wall_s_per_round"]
    later = per_round_s[1:] or per_round_s
    simulated = float(res.rounds["participants"].iloc[1:].mean() if rounds > 1 else per_round)
    median_s = statistics.median(later)
    return {
        "setup_s": timings["setup_s"],
        "first_ms": per_round_s[0] * 1e3,
        "ms_per_round": median_s * 1e3,
        "simpy_ms": statistics.median(collection_s[1:] or collection_s) * 1e3,
        "devices_per_round": simulated,
        "devices_per_s": simulated / median_s,
        "peak_rss_mb": _rss_mb(),
        "added_rss_mb": _rss_mb() - base_mb,
    }


def contended_scenario(devices: int, edges: int, contention: bool | None, rounds: int,
                       per_round: int) -> dict[str, Any]:  # fmt: skip
    """Return the contended section's scenario: ``devices`` phones on 4g over ``edges`` edges.

    ``contention`` None leaves the ``network`` key out (for a fedsim without it).
    """
    if devices % edges:
        raise ValueError(f"{devices} devices do not spread evenly over {edges} edges")
    scenario: dict[str, Any] = {
        "name": f"bench-contended-{devices}-{edges}",
        "seed": 1,
        "learning": False,
        "data": {"dataset": "digits", "samples_per_device": 50, "samples_sigma": 0.5},
        "model": "digits_mlp",
        "topology": {
            "cloud": {"hardware": "cloud_server", "backhaul": "wan"},
            "edges": [
                {
                    "name": f"cell{e}",
                    "hardware": "edge_server",
                    "backhaul": "wan",
                    "devices": [{"hardware": "phone_mid", "link": "4g", "count": devices // edges}],
                }
                for e in range(edges)
            ],
        },
        "algorithm": {"use": "fedavg", "params": {"lr": 0.1, "local_epochs": 2, "batch_size": 10}},
        "rounds": {"participants": min(per_round, devices), "over_selection": 1.0},
        "availability": {"kind": "always_on"},
        "stop": {"max_rounds": rounds},
        "evaluation": {"every": 1, "ua": False},
        "runtime": {"kind": "inline"},
    }
    if contention is not None:
        scenario["network"] = {"contention": contention}
    return scenario


def one_contended(
    devices: int, edges: int, mode: str, rounds: int, per_round: int, out: Path
) -> dict[str, Any]:
    """Run one configuration of the contended section in this process; return its figures.

    ``mode``: ``on`` (contention true), ``off`` (false) or ``base`` (no ``network`` key: an
    older fedsim on ``PYTHONPATH``).
    """
    import fedsim
    from fedsim.api import run
    from fedsim.config import scenario_from_dict

    collection_s, busiest = _time_collection()
    contention = {"on": True, "off": False, "base": None}[mode]
    raw = contended_scenario(devices, edges, contention, rounds, per_round)
    res = run(scenario_from_dict(raw, raw["name"]), out)
    timings = json.loads((res.path / "timings.json").read_text())
    per_round_s = timings["wall_s_per_round"]
    dr = res.device_rounds
    later = per_round_s[1:] or per_round_s
    rows = res.rounds
    shared = {
        col: float(dr[col].mean()) if col in dr.columns else float("nan")
        for col in ("up_shared_s", "down_shared_s")
    }
    return {
        "fedsim": str(Path(fedsim.__file__).resolve().parents[1]),
        "setup_s": timings["setup_s"],
        "ms_per_round": statistics.median(later) * 1e3,
        "simpy_ms": statistics.median(collection_s[1:] or collection_s) * 1e3,
        "devices_per_round": float(rows["participants"].mean()),
        "round_virtual_s": float((rows["virtual_time_s"] - rows["round_start_s"]).mean()),
        "up_shared_s": shared["up_shared_s"],
        "down_shared_s": shared["down_shared_s"],
        "max_flows": max(busiest) if busiest else -1,
    }


def one_offloaded(devices: int, edges: int, plan: str, rounds: int, per_round: int,
                  out: Path) -> dict[str, Any]:  # fmt: skip
    """Run one configuration of the offloading section (``plan``: local, split, split-all).

    ``split-all``: split(1) with ``batches_per_step: all`` (one step a round).
    """
    from fedsim.api import run
    from fedsim.config import scenario_from_dict

    collection_s, _ = _time_collection()
    raw = contended_scenario(devices, edges, True, rounds, per_round)
    raw["data"] = {"dataset": "digits", "samples_per_device": 150}  # 15 batches of 10
    raw["algorithm"]["params"] = {"lr": 0.1, "local_epochs": 1, "batch_size": 10}
    raw["offload"] = {"use": "local"}
    if plan.startswith("split"):
        per_step = plan.removeprefix("split-") if "-" in plan else 1
        per_step = int(per_step) if str(per_step).isdigit() else per_step
        raw["offload"] = {"use": "split", "params": {"k": 1}, "batches_per_step": per_step}
    res = run(scenario_from_dict(raw, raw["name"]), out)
    per_round_s = json.loads((res.path / "timings.json").read_text())["wall_s_per_round"]
    dr = res.device_rounds
    return {
        "ms_per_round": statistics.median(per_round_s[1:] or per_round_s) * 1e3,
        "simpy_ms": statistics.median(collection_s[1:] or collection_s) * 1e3,
        "round_virtual_s": float(
            (res.rounds["virtual_time_s"] - res.rounds["round_start_s"]).mean()
        ),
        "plans": sorted(set(dr["plan"])),
        "round_s_by_device": float((dr["end_s"] - dr["start_s"]).mean()),
        "edge_queue_s": float(dr["edge_queue_s"].mean()),
    }


def offload_section(args: argparse.Namespace, tmp: Path) -> int:
    """Run the offloading section: local vs split(1), 15 batches a device, 1 and 10 edges.

    split(1) runs batch by batch (``batches_per_step: 1``) and with all of a round's
    batches in one step (``all``).
    """
    print(
        f"\noffloading: phone_mid on 4g, contention on, {args.per_round} devices per round x 15 "
        f"batches, {args.rounds} rounds; split(1) = per batch activations up, edge compute, "
        "gradients down; edge queue s = mean seconds a device's edge work lost to sharing; "
        "steps = batches_per_step"
    )
    print(
        f"{'devices':>9} {'edges':>5} {'plan':>8} {'steps':>5} {'ms/round':>8} {'SimPy ms':>8} "
        f"{'round s':>8} {'edge queue s':>12} {'split/local':>11}  target split <= 3 x local"
    )
    for edges in (1, 10):
        figures: dict[str, dict[str, Any]] = {}
        for plan in ("local", "split", "split-all"):
            cmd = [
                sys.executable, __file__, "--one-offloaded", str(args.contended_devices[0]),
                str(edges), plan, "--rounds", str(args.rounds), "--per-round",
                str(args.per_round), "--out", str(tmp / f"offload-{edges}-{plan}"),
            ]  # fmt: skip
            f = _child(cmd)
            if f is None:
                return 1
            figures[plan] = f
            ratio, verdict = "", ""
            if plan != "local":
                r = f["ms_per_round"] / figures["local"]["ms_per_round"]
                ratio, verdict = f"{r:.2f}", "MET" if r <= 3.0 else "MISSED"
            steps = {"local": "", "split": "1", "split-all": "all"}[plan]
            print(
                f"{args.contended_devices[0]:>9,} {edges:>5} {'/'.join(f['plans']):>8} {steps:>5} "
                f"{f['ms_per_round']:>8.1f} {f['simpy_ms']:>8.1f} {f['round_virtual_s']:>8.2f} "
                f"{f['edge_queue_s']:>12.3f} {ratio:>11}  {verdict}",
                flush=True,
            )
    return 0


def _fedsim_root() -> str:
    """Return the folder the fedsim package is imported from (a checkout's root)."""
    spec = importlib.util.find_spec("fedsim")
    return str(Path(spec.origin).resolve().parents[1]) if spec and spec.origin else "?"


def _child(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Run a configuration's subprocess; return its JSON figures (None: it failed)."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def contended_section(args: argparse.Namespace, tmp: Path) -> int:
    """Run the contended section: each population x {1, 10} edges x contention on / off."""
    print(
        f"\ncontention: phone_mid on 4g, always on, {args.per_round} devices per round, "
        f"{args.rounds} rounds; ms are medians after the first round; shared s = mean seconds "
        "a device-round's transfer lost to sharing; flows = most at once on one resource"
    )
    print(
        f"{'devices':>9} {'edges':>5} {'contention':>10} {'setup s':>7} {'ms/round':>8} "
        f"{'SimPy ms':>8} {'round s':>8} {'up shared s':>11} {'down shared s':>13} "
        f"{'flows':>5} {'on/off':>6}  target on <= 2 x off"
    )
    baseline = Path(args.baseline).resolve() if args.baseline else None
    modes = ["off", "on"] + (["base"] if baseline else [])
    for n in args.contended_devices:
        for edges in (1, 10):
            figures: dict[str, dict[str, Any]] = {}
            for mode in modes:
                cmd = [
                    sys.executable, __file__, "--one-contended", str(n), str(edges), mode,
                    "--rounds", str(args.rounds), "--per-round", str(args.per_round),
                    "--out", str(tmp / f"contended-{n}-{edges}-{mode}"),
                ]  # fmt: skip
                env = None
                if mode == "base":
                    assert baseline is not None
                    env = {**os.environ, "PYTHONPATH": str(baseline)}
                f = _child(cmd, env)
                if f is None:
                    return 1
                if mode == "base" and Path(f["fedsim"]) != baseline:
                    print(f"baseline ran {f['fedsim']}, not {baseline}", file=sys.stderr)
                    return 1
                figures[mode] = f
                label = {"on": "true", "off": "false", "base": "baseline"}[mode]
                ratio, verdict = "", ""
                if mode == "on":
                    r = f["ms_per_round"] / figures["off"]["ms_per_round"]
                    ratio, verdict = f"{r:.2f}", "MET" if r <= 2.0 else "MISSED"
                elif mode == "base":
                    r = figures["on"]["ms_per_round"] / f["ms_per_round"]
                    ratio, verdict = f"{r:.2f}", "(true / baseline)"
                flows = f"{f['max_flows']:>5}" if mode == "on" else f"{'-':>5}"
                print(
                    f"{n:>9,} {edges:>5} {label:>10} {f['setup_s']:>7.2f} "
                    f"{f['ms_per_round']:>8.1f} {f['simpy_ms']:>8.1f} "
                    f"{f['round_virtual_s']:>8.2f} {f['up_shared_s']:>11.3f} "
                    f"{f['down_shared_s']:>13.3f} {flows} {ratio:>6}  {verdict}",
                    flush=True,
                )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=1000, help="devices per round (K)")
    ap.add_argument("--max-devices", type=int, default=1_000_000)
    ap.add_argument("--contended-only", action="store_true", help="run only the contention section")
    ap.add_argument(
        "--contended-devices", type=int, nargs="+", default=[10_000], metavar="N",
        help="populations of the contention section (default 10000)",
    )  # fmt: skip
    ap.add_argument(
        "--baseline", metavar="DIR",
        help="an older fedsim tree: add its uncontended row to the contention section",
    )  # fmt: skip
    ap.add_argument("--one", nargs=2, metavar=("DEVICES", "KIND"), help=argparse.SUPPRESS)
    ap.add_argument("--one-contended", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--one-offloaded", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--offload-only", action="store_true", help="run only the offloading section")
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        figures = one(int(args.one[0]), args.one[1], args.rounds, args.per_round, Path(args.out))
        print(json.dumps(figures))
        return 0
    if args.one_contended:
        n, edges, mode = args.one_contended
        out = Path(args.out)
        print(json.dumps(one_contended(int(n), int(edges), mode, args.rounds, args.per_round, out)))
        return 0
    if args.one_offloaded:
        n, edges, plan = args.one_offloaded
        out = Path(args.out)
        print(json.dumps(one_offloaded(int(n), int(edges), plan, args.rounds, args.per_round, out)))
        return 0

    populations = [n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_devices]
    print(
        f"fedsim driver scale benchmark: systems only, digits_mlp, {args.per_round} devices "
        f"per round, {args.rounds} rounds; {platform.node()}, {platform.processor() or '?'}, "
        f"Python {platform.python_version()}; fedsim from {_fedsim_root()}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="fedsim-bench-scale-"))
    try:
        only = args.contended_only or args.offload_only
        for kind in () if only else ("always_on", "on_off"):
            print(f"\navailability: {kind}")
            print(
                f"{'devices':>9} {'setup s':>8} {'first ms':>9} {'ms/round':>9} {'SimPy ms':>8} "
                f"{'dev/round':>9} {'devices/s':>10} {'peak RSS MB':>11} {'run added MB':>12} "
                f"{'x setup':>8} {'x us/device':>11}"
            )
            base: dict[str, float] | None = None
            for n in populations:
                cmd = [
                    sys.executable, __file__, "--one", str(n), kind, "--rounds", str(args.rounds),
                    "--per-round", str(args.per_round), "--out", str(tmp / f"{kind}-{n}"),
                ]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                f = json.loads(done.stdout.strip().splitlines()[-1])
                base = base or f
                print(
                    f"{n:>9,} {f['setup_s']:>8.2f} {f['first_ms']:>9.1f} {f['ms_per_round']:>9.1f} "
                    f"{f['simpy_ms']:>8.1f} "
                    f"{f['devices_per_round']:>9.0f} {f['devices_per_s']:>10,.0f} "
                    f"{f['peak_rss_mb']:>11.0f} {f['added_rss_mb']:>12.1f} "
                    f"{f['setup_s'] / base['setup_s']:>8.2f} "
                    f"{base['devices_per_s'] / f['devices_per_s']:>11.2f}",
                    flush=True,
                )
        if not args.offload_only and contended_section(args, tmp):
            return 1
        return 0 if args.contended_only else offload_section(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
