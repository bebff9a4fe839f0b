"""``energy``: the plan that costs the device the least energy within the deadline."""

from __future__ import annotations

from fedsim.offload.base import DeviceView, OffloadPolicy
from fedsim.offload.plans import Plan


class Energy(OffloadPolicy):
    """The least device energy among the plans estimated to make the deadline.

    Only plans that fit the device's memory count; without a deadline all of them do; if
    none makes the deadline, the fastest plan.
    """

    def choose(self, view: DeviceView) -> Plan:
        """Return the least-energy plan within the deadline."""
        ok = []
        for plan in view.candidates():
            e = view.estimate(plan)
            if e.fits and (view.deadline_s is None or e.time_s <= view.deadline_s):
                ok.append((e.device_energy_j, plan))
        if not ok:
            return view.fastest()
        return min(ok, key=lambda item: item[0])[1]
