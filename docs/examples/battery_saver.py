"""A battery saver: offload a device's training when its local round would cost too many joules.

The worked example of ``docs/offloading.md``. A scenario names it as
``offload: {use: "battery_saver:BatterySaver", params: {budget_j: 2.0}}``, with this
folder on the import path (``PYTHONPATH=docs/examples``).
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fedsim.offload import LOCAL, DeviceView, OffloadPolicy, Plan


class BatterySaverParams(BaseModel):
    """``BatterySaver``'s parameters (``offload.params`` in a scenario).

    Attributes
    ----------
    budget_j : float
        Joules a device may spend on a round of local training before it looks for an offload.
    min_saving : float
        Share of local training's joules an offload must save to be chosen (estimates err).
    allow_full : bool
        Also consider ``full`` (raw training data to a trusted edge); default: splits only.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    budget_j: Annotated[float, Field(gt=0)]
    min_saving: Annotated[float, Field(ge=0, lt=1)] = 0.1
    allow_full: bool = False


class BatterySaver(OffloadPolicy):
    """Train locally within the energy budget; else the offload that saves the most energy.

    An offload qualifies if it fits the device's memory, is estimated to make the round's
    deadline and saves at least ``min_saving`` of local training's joules (any saving when
    local training does not fit). The fewest joules win; ties go to the earlier candidate
    (the smaller split point). With none, the device trains locally, over budget.
    """

    Params = BatterySaverParams
    params: BatterySaverParams

    def choose(self, view: DeviceView) -> Plan:
        """Return ``local`` within the budget, else the cheapest qualifying offload."""
        local = view.estimate(LOCAL)
        if local.fits and local.device_energy_j <= self.params.budget_j:
            return LOCAL
        limit_j = local.device_energy_j * (1 - self.params.min_saving) if local.fits else math.inf
        best = LOCAL
        for plan in view.candidates():  # local, full (trusted edge only), split(1), ...
            if plan.kind == "local" or (plan.kind == "full" and not self.params.allow_full):
                continue
            e = view.estimate(plan)
            on_time = view.deadline_s is None or e.time_s <= view.deadline_s
            if e.fits and on_time and e.device_energy_j < limit_j:
                best, limit_j = plan, e.device_energy_j
        return best
