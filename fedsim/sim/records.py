"""What a round is made of: a device's drawn plan, what it did, and the round's result."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from fedsim.offload.work import OffloadWork
from fedsim.sim.costs import Transfer


class Status(str, Enum):
    """What became of a selected device in a round."""

    COMPLETED = "completed"
    STRAGGLER = "straggler"
    DROPPED = "dropped"
    DISCARDED = "discarded"
    OOM = "oom"


@dataclass(frozen=True)
class DevicePlan:
    """A device's modelled round, all drawn at dispatch (independent of training).

    Attributes
    ----------
    device_id, edge_id : int
        Who and where.
    fetch_s : float
        Waiting for the edge to fetch the model from the cloud, if nothing shared its
        backhaul (0 when the edge has the model).
    down, up : Transfer
        The access-link download of the model and upload of the update, each at the
        device's own rate (sharing the edge's access network can only slow them).
    compute_s : float
        Local training time.
    offline_at_s : float
        Absolute virtual time the device goes off line (``inf``: stays on line).
    group : int
        The device's group (which access network it uses).
    oom : bool
        The device cannot hold the model's training footprint: it never trains.
    work : OffloadWork or None
        What an offloaded plan puts on the device, its links and the edge (None: local).
    stay_online : bool
        Under ``full``: whether the device must stay on line while the edge trains.
    """

    device_id: int
    edge_id: int
    fetch_s: float
    down: Transfer
    compute_s: float
    up: Transfer
    offline_at_s: float
    group: int = 0
    oom: bool = False
    work: OffloadWork | None = None
    stay_online: bool = True

    @property
    def plan_label(self) -> str:
        """Return the offloading plan as written in results (``local``, ``full``, ``split(k)``)."""
        return "local" if self.work is None else self.work.plan.label

    def finish_s(self, start_s: float) -> float:
        """Return the earliest the device could report (when nothing it uses is shared)."""
        if self.work is not None:
            return start_s + self.fetch_s  # offloaded: a loose bound
        return start_s + self.fetch_s + self.down.duration_s + self.compute_s + self.up.duration_s


@dataclass
class DeviceOutcome:
    """What a device did in a round, phase by phase (seconds actually spent).

    ``download_s`` includes ``fetch_s`` (idle, waiting for the edge's copy of the model)
    and ``access_down_s`` (the device's own download: round trip and data). The
    ``*_shared_s`` are the seconds a transfer lost to sharing its access network (the
    integral of ``1 - rate / own rate``); ``*_flow_s`` its data phase's seconds. For energy:
    the device's own compute, receive, transmit and idle seconds (``attached`` False: a full
    offload released the device, so it does not wait for the round to close). Offloading:
    the edge's compute seconds for the device and the part of them lost to sharing
    (``edge_queue_s``), activation and data bytes, and whether raw data left the device.
    """

    plan: DevicePlan
    status: Status
    start_s: float
    end_s: float
    download_s: float
    access_down_s: float
    compute_s: float
    upload_s: float
    wait_s: float
    bytes_down: int
    bytes_up: int
    fetch_s: float = 0.0
    down_shared_s: float = 0.0
    up_shared_s: float = 0.0
    down_flow_s: float = 0.0
    up_flow_s: float = 0.0
    plan_label: str = "local"
    device_compute_s: float = 0.0
    rx_s: float = 0.0
    tx_s: float = 0.0
    idle_s: float = 0.0
    edge_compute_s: float = 0.0
    edge_queue_s: float = 0.0
    act_bytes_up: int = 0
    act_bytes_down: int = 0
    data_bytes_up: int = 0
    raw_data_left: bool = False
    attached: bool = True


@dataclass(frozen=True)
class RoundTiming:
    """The timing result of one round."""

    start_s: float
    close_s: float
    outcomes: list[DeviceOutcome]
    kept: list[DeviceOutcome]
