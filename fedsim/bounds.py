"""Physical ranges of scenario and profile numbers, and the pydantic check that enforces them.

Every number a user gives is bounded to a range that a real system can have, so that an
absurd value (``1e308``, ``.inf``, ``nan``) is an input error naming the file and field
rather than an overflow deep in a run. The limits, and why:

============================  =================  ==================================
quantity                      range              reason
============================  =================  ==================================
bandwidth, capacity (Mbps)    [1e-3, 1e6]        1 kbit/s (a weak IoT link) to
                                                 1 Tbit/s (beyond any one link)
compute (FLOP/s)              [1e3, 1e18]        a microcontroller to an exascale
                                                 machine
power (W)                     (0, 1e4]           up to a rack of servers
log-sigma of a lognormal      [0, 5]             ``exp(5)`` ≈ 150× per standard
                                                 deviation is already no model
virtual seconds               (0, 1e9]           about 32 years of simulated time
wall-clock seconds            (0, 1e6]           about 11.6 days
devices in a population       1 to 10**7         the simulator keeps a few arrays
                                                 per device; tested to 10**6
============================  =================  ==================================
"""

from __future__ import annotations

import math

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

MIN_MBPS = 1e-3
MAX_MBPS = 1e6
MIN_FLOPS = 1e3
MAX_FLOPS = 1e18
MAX_WATTS = 1e4
MAX_LOG_SIGMA = 5.0
MAX_VIRTUAL_S = 1e9
MAX_WALL_S = 1e6
MAX_DEVICES = 10**7
MAX_SEED = 2**63 - 1


def _fmt(value: float) -> str:
    """Format a bound compactly: ``0``, ``100``, ``0.001``, ``1e+06``."""
    return f"{value:g}"


def interval_text(lo: float, hi: float, unit: str = "", low_open: bool = False) -> str:
    """Return ``[lo, hi] unit`` or ``(lo, hi] unit``, e.g. ``(0, 1e+04] W``."""
    text = f"{'(' if low_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
    return f"{text} {unit}" if unit else text


def in_range(lo: float, hi: float, unit: str = "", low_open: bool = False) -> AfterValidator:
    """Return a pydantic check that a float is finite and within ``lo..hi``.

    Use as ``Annotated[float, in_range(0, 100, low_open=True)]``. A value outside gives
    the error ``expected a number in (0, 100]`` (the loader appends ``(got VALUE)``), so
    ``inf`` and ``nan`` are refused like any other out-of-range number.

    Parameters
    ----------
    lo, hi : float
        The bounds; ``hi`` is always included.
    unit : str
        Appended to the interval in the message (``"Mbps"``, ``"s"``).
    low_open : bool
        Exclude ``lo`` itself (``(lo, hi]``).
    """
    message = f"expected a number in {interval_text(lo, hi, unit, low_open)}"

    def check(value: float) -> float:
        above = value > lo if low_open else value >= lo
        if not (math.isfinite(value) and above and value <= hi):
            raise PydanticCustomError("out_of_range", message)
        return value

    return AfterValidator(check)
