"""Building blocks shared by the scenario schema's modules: strict models, bounded numbers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsim.bounds import MAX_MBPS, MAX_VIRTUAL_S, MIN_MBPS, in_range

PositiveInt = Annotated[int, Field(gt=0)]
#: A count of rounds, evaluations or batches: 1 to 10**7.
Count = Annotated[int, Field(gt=0, le=10**7)]
#: Virtual (simulated) seconds: above 0, at most 1e9 (about 32 years).
VirtualSeconds = Annotated[float, in_range(0, MAX_VIRTUAL_S, "s", low_open=True)]
#: A shared capacity: 1e-3 to 1e6 Mbps (1 kbit/s to 1 Tbit/s).
Mbps = Annotated[float, in_range(MIN_MBPS, MAX_MBPS, "Mbps")]


class Strict(BaseModel):
    """A scenario section: unknown keys are errors, values are not coerced, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def field_error(loc: tuple[str | int, ...], message: str, value: object) -> ValidationError:
    """Return an error for a cross-field rule, located at the field it is about."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=loc, input=value
    )
    return ValidationError.from_exception_data("Scenario", [detail])
