"""``fastest``: the plan with the least estimated completion time."""

from __future__ import annotations

from fedsim.offload.base import DeviceView, OffloadPolicy
from fedsim.offload.plans import Plan


class Fastest(OffloadPolicy):
    """The plan estimated to finish first.

    Among local, full (trusted edge) and every split, given the profiles, the device's
    lasting link quality and the edge's load.
    """

    def choose(self, view: DeviceView) -> Plan:
        """Return the fastest plan that fits the device's memory."""
        return view.fastest()
