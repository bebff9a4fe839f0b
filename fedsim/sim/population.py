"""The flat device table built from a scenario's topology: who sits under which edge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.config import TopologySpec
from fedsim.seeding import Purpose, stream


@dataclass(frozen=True)
class DeviceGroup:
    """A group of identical devices: hardware and access-link profile names, and model.

    ``model`` None: the scenario's model.
    """

    edge_id: int
    hardware: str
    link: str
    first_device_id: int
    count: int
    model: str | None = None


@dataclass(frozen=True)
class Population:
    """Every device as integer arrays indexed by device id (compact at any scale).

    Attributes
    ----------
    edge_of : np.ndarray
        Edge index of each device.
    group_of : np.ndarray
        Device-group index of each device.
    groups : tuple of DeviceGroup
        The groups, in topology order.
    edge_names : tuple of str
        Edge names, by edge index.
    """

    edge_of: np.ndarray
    group_of: np.ndarray
    groups: tuple[DeviceGroup, ...]
    edge_names: tuple[str, ...]

    @property
    def num_devices(self) -> int:
        """Return the number of devices."""
        return int(self.edge_of.shape[0])

    @property
    def num_edges(self) -> int:
        """Return the number of edges."""
        return len(self.edge_names)

    def group(self, device_id: int) -> DeviceGroup:
        """Return the group of one device."""
        return self.groups[int(self.group_of[device_id])]

    @classmethod
    def from_topology(cls, topology: TopologySpec) -> Population:
        """Build the table, numbering devices edge by edge, group by group."""
        groups: list[DeviceGroup] = []
        next_id = 0
        for edge_id, edge in enumerate(topology.edges):
            for g in edge.devices:
                groups.append(DeviceGroup(edge_id, g.hardware, g.link, next_id, g.count, g.model))
                next_id += g.count
        counts = np.array([g.count for g in groups], dtype=np.int64)
        group_of = np.repeat(np.arange(len(groups), dtype=np.int32), counts)
        edge_of = np.array([g.edge_id for g in groups], dtype=np.int32)[group_of]
        return cls(edge_of, group_of, tuple(groups), tuple(e.name for e in topology.edges))


def sample_counts(num_devices: int, median: int, sigma: float, seed: int) -> np.ndarray:
    """Return training samples per device for a systems-only run without a partition.

    Every device holds ``median`` samples, or with ``sigma > 0`` a lognormal count
    ``max(1, round(median * exp(sigma * z)))``. The ``z`` come from one keyed stream in
    device-id order, so a device's count depends on the seed and its id alone, not on
    how many devices there are.

    Parameters
    ----------
    num_devices : int
        Population size.
    median : int
        Samples per device (the median when spread).
    sigma : float
        Log-sigma of the spread (0: every device holds ``median``).
    seed : int
        The scenario seed.
    """
    if sigma <= 0:
        return np.full(num_devices, median, dtype=np.int64)
    z = stream(seed, Purpose.PARTITION, 1).standard_normal(num_devices)
    return np.maximum(1, np.rint(median * np.exp(sigma * z))).astype(np.int64)
