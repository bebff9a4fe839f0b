"""``full``: hand the whole learning task and the training data to a trusted edge."""

from __future__ import annotations

from fedsim.offload.base import DeviceView, OffloadPolicy
from fedsim.offload.plans import FULL, LOCAL, Plan


class Full(OffloadPolicy):
    """Offload everything to the edge when it is trusted; train locally otherwise.

    A scenario that names ``full`` for devices under an untrusted edge is rejected by
    ``fedsim validate``; raw data never leaves a device for an untrusted edge.
    """

    def choose(self, view: DeviceView) -> Plan:
        """Return ``full`` under a trusted edge, else ``local``."""
        return FULL if view.edge_trusted else LOCAL
