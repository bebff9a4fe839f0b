"""``deadline``: offload only the devices whose local training would miss the deadline."""

from __future__ import annotations

from fedsim.offload.base import DeviceView, OffloadPolicy
from fedsim.offload.plans import LOCAL, Plan


class Deadline(OffloadPolicy):
    """Train locally when the estimate makes the deadline; else take the fastest plan.

    Without a deadline every device trains locally (if it fits its memory).
    """

    def choose(self, view: DeviceView) -> Plan:
        """Return ``local`` if it is estimated to make the deadline, else the fastest plan."""
        local = view.estimate(LOCAL)
        if local.fits and (view.deadline_s is None or local.time_s <= view.deadline_s):
            return LOCAL
        return view.fastest()
