"""What a round is made of: a device's drawn plan, what it did, and the round's result."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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

    def finish_s(self, start_s: float) -> float:
        """Return the earliest the device could report (when nothing it uses is shared)."""
        return start_s + self.fetch_s + self.down.duration_s + self.compute_s + self.up.duration_s


@dataclass
class DeviceOutcome:
    """What a device did in a round, phase by phase (seconds actually spent).

    ``download_s`` includes ``fetch_s`` (idle, waiting for the edge's copy of the model)
    and ``access_down_s`` (the device's own download: round trip and data). The
    ``*_shared_s`` are the seconds a transfer lost to sharing its access network (the
    integral of ``1 - rate / own rate``); ``*_flow_s`` its data phase's seconds.
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


@dataclass(frozen=True)
class RoundTiming:
    """The timing result of one round."""

    start_s: float
    close_s: float
    outcomes: list[DeviceOutcome]
    kept: list[DeviceOutcome]
