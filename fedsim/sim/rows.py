"""The rows of the result tables: one per round, one per device per round, one per UA value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedsim.runtime.base import Evaluation
from fedsim.sim.costs import BITS_PER_BYTE, Energy
from fedsim.sim.population import Population
from fedsim.sim.records import DeviceOutcome, RoundTiming, Status

ROUND_COLUMNS = (
    "version", "round", "round_start_s", "virtual_time_s", "participants", "completed",
    "stragglers", "dropped", "bytes_up", "bytes_down", "energy_j", "download_s", "compute_s",
    "upload_s", "wait_s", "edge_s", "cloud_s", "accuracy", "loss", "ua_mean", "ua_p10",
    "ua_p50", "ua_p90", "oom", "down_shared_s", "up_shared_s", "energy_compute_j",
    "energy_radio_j", "energy_idle_j", "offloaded", "edge_compute_s", "edge_queue_s",
    "act_bytes_up", "act_bytes_down", "data_bytes_up", "ua_mean_clean", "ua_before_mean",
)  # fmt: skip
DEVICE_COLUMNS = (
    "round", "device_id", "edge_id", "profile", "link", "status", "start_s", "end_s",
    "download_s", "compute_s", "upload_s", "wait_s", "bytes_up", "bytes_down", "energy_j",
    "fetch_s", "down_shared_s", "up_shared_s", "down_mbps", "up_mbps", "energy_compute_j",
    "energy_radio_j", "energy_idle_j", "plan", "edge_compute_s", "edge_queue_s",
    "act_bytes_up", "act_bytes_down", "data_bytes_up", "raw_data_left",
)  # fmt: skip
UA_COLUMNS = ("version", "device_id", "accuracy", "accuracy_before")
#: One row per asynchronous update: a device's (``source`` device) or an edge's forwarded
#: model (``source`` edge, no dispatch or device). ``server`` is ``cloud`` or ``edge``;
#: ``version`` the server version it made (applied) or entered (buffered, then applied).
UPDATE_COLUMNS = (
    "dispatch", "source", "device_id", "edge_id", "server", "base_version", "dispatch_s",
    "arrival_s", "staleness", "weight", "fate", "version", "applied_s",
)  # fmt: skip
ACCURACY_COLUMNS = (
    "accuracy", "loss", "ua_mean", "ua_p10", "ua_p50", "ua_p90", "ua_mean_clean",
    "ua_before_mean",
)  # fmt: skip


class RowSink(Protocol):
    """Where a run's rows go as its rounds finish."""

    def add_round(self, row: dict[str, object]) -> None:
        """Take a round's row (a dict over ROUND_COLUMNS)."""

    def add_devices(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Take a round's device rows (DEVICE_COLUMNS order)."""

    def add_ua(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Take an evaluation's UA rows (UA_COLUMNS order)."""

    def add_updates(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Take asynchronous update rows (UPDATE_COLUMNS order)."""


@dataclass
class MemorySink:
    """Keeps every row in memory (tests, short runs)."""

    rounds: list[tuple[object, ...]] = field(default_factory=list)
    device_rounds: list[tuple[object, ...]] = field(default_factory=list)
    device_ua: list[tuple[object, ...]] = field(default_factory=list)
    updates: list[tuple[object, ...]] = field(default_factory=list)

    def add_round(self, row: dict[str, object]) -> None:
        """Keep a round's row."""
        self.rounds.append(tuple(row[c] for c in ROUND_COLUMNS))

    def add_devices(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Keep device rows."""
        self.device_rounds.extend(rows)

    def add_ua(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Keep UA rows."""
        self.device_ua.extend(rows)

    def add_updates(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Keep update rows."""
        self.updates.extend(rows)


def evaluation_columns(
    row: dict[str, object], ev: Evaluation, noisy: frozenset[int]
) -> list[tuple[object, ...]]:
    """Fill a row's accuracy columns from an evaluation; return its UA rows.

    ``ua_mean_clean``: the mean UA over the devices not in ``noisy`` (noisy clients), left
    empty when there are none. ``ua_before_mean`` (and each UA row's ``accuracy_before``):
    UA before personalisation, for algorithms that personalise; empty otherwise.
    """
    row["accuracy"], row["loss"] = ev.accuracy, ev.loss
    q = ev.ua_quantiles()
    if q is None:
        return []
    row["ua_mean"], row["ua_p10"], row["ua_p50"], row["ua_p90"] = q
    ids = sorted(ev.ua)
    if noisy:
        clean = [ev.ua[d] for d in ids if d not in noisy]
        row["ua_mean_clean"] = float(np.mean(clean)) if clean else None
    if ev.ua_before:
        row["ua_before_mean"] = float(np.mean([ev.ua_before[d] for d in ids]))
    return [(row["version"], d, ev.ua[d], ev.ua_before.get(d)) for d in ids]


def effective_mbps(num_bytes: int, flow_s: float) -> float:
    """Return a transfer's mean data rate, Mbps (0 when no data moved)."""
    return num_bytes * BITS_PER_BYTE / flow_s / 1e6 if flow_s > 0 and num_bytes > 0 else 0.0


def round_row(
    round_index: int, version: int, start_s: float, end_s: float, timing: RoundTiming,
    server_s: tuple[float, float], backhaul_bytes: tuple[int, int], energies: list[Energy],
) -> dict[str, object]:  # fmt: skip
    """Return a round's row without its accuracy columns.

    Bytes include the edges' backhaul traffic (up, down); the phase columns are means over
    the devices whose reports were kept, and with ``edge_s + cloud_s`` they add up to the
    round's duration. ``down_shared_s``, ``up_shared_s``, the energies and the offloading
    columns are totals over every selected device; ``bytes_up`` and ``bytes_down`` count
    every byte on the links: models, activations, training data and backhaul.
    """
    outs = timing.outcomes
    kept = timing.kept

    def mean(attr: str) -> float:
        return float(np.mean([getattr(o, attr) for o in kept])) if kept else 0.0

    return {
        "version": version,
        "round": round_index,
        "round_start_s": start_s,
        "virtual_time_s": end_s,
        "participants": len(outs),
        "completed": len(kept),
        "stragglers": sum(o.status is Status.STRAGGLER for o in outs),
        "dropped": sum(o.status is Status.DROPPED for o in outs),
        "bytes_up": sum(o.bytes_up + o.act_bytes_up + o.data_bytes_up for o in outs)
        + backhaul_bytes[0],
        "bytes_down": sum(o.bytes_down + o.act_bytes_down for o in outs) + backhaul_bytes[1],
        "energy_j": float(sum(e.total_j for e in energies)),
        "download_s": mean("download_s"),
        "compute_s": mean("compute_s"),
        "upload_s": mean("upload_s"),
        "wait_s": mean("wait_s"),
        "edge_s": server_s[0],
        "cloud_s": server_s[1],
        "oom": sum(o.status is Status.OOM for o in outs),
        "down_shared_s": float(sum(o.down_shared_s for o in outs)),
        "up_shared_s": float(sum(o.up_shared_s for o in outs)),
        "energy_compute_j": float(sum(e.compute_j for e in energies)),
        "energy_radio_j": float(sum(e.radio_j for e in energies)),
        "energy_idle_j": float(sum(e.idle_j for e in energies)),
        "offloaded": sum(o.plan_label != "local" for o in outs),
        "edge_compute_s": float(sum(o.edge_compute_s for o in outs)),
        "edge_queue_s": float(sum(o.edge_queue_s for o in outs)),
        "act_bytes_up": sum(o.act_bytes_up for o in outs),
        "act_bytes_down": sum(o.act_bytes_down for o in outs),
        "data_bytes_up": sum(o.data_bytes_up for o in outs),
    }


def device_rows(
    round_index: int, outcomes: list[DeviceOutcome], population: Population, energies: list[Energy]
) -> list[tuple[object, ...]]:
    """Return one row per selected device of a round, in the order of ``outcomes``.

    ``energies`` are the devices' energies, in the same order.
    """
    rows: list[tuple[object, ...]] = []
    for o, e in zip(outcomes, energies, strict=True):
        d = o.plan.device_id
        group = population.groups[int(population.group_of[d])]
        rows.append(
            (
                round_index, d, o.plan.edge_id, group.hardware, group.link, o.status.value,
                o.start_s, o.end_s, o.download_s, o.compute_s, o.upload_s, o.wait_s,
                o.bytes_up, o.bytes_down, e.total_j, o.fetch_s, o.down_shared_s,
                o.up_shared_s, effective_mbps(o.bytes_down, o.down_flow_s),
                effective_mbps(o.bytes_up + o.data_bytes_up, o.up_flow_s), e.compute_j,
                e.radio_j, e.idle_j, o.plan_label, o.edge_compute_s, o.edge_queue_s,
                o.act_bytes_up, o.act_bytes_down, o.data_bytes_up, o.raw_data_left,
            )
        )  # fmt: skip
    return rows
