"""``local``: every device trains on its own hardware (no offloading)."""

from __future__ import annotations

from fedsim.offload.base import DeviceView, OffloadPolicy
from fedsim.offload.plans import LOCAL, Plan


class Local(OffloadPolicy):
    """Train on the device."""

    def choose(self, view: DeviceView) -> Plan:
        """Return ``local``."""
        return LOCAL
