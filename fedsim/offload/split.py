"""``split``: keep the first ``k`` layers on the device, run the rest on the edge."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fedsim.offload.base import DeviceView, OffloadPolicy
from fedsim.offload.plans import Plan, split_at


class SplitParams(BaseModel):
    """``split``'s parameters."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    k: Annotated[int, Field(gt=0)] = 1


class Split(OffloadPolicy):
    """Device-edge collaborative training at a fixed split point ``k`` (PerFit Sec. III)."""

    Params = SplitParams
    params: SplitParams

    def choose(self, view: DeviceView) -> Plan:
        """Return ``split(k)``."""
        return split_at(self.params.k)
