"""Built-in algorithms by name; any ``package.module:Class`` works too."""

from __future__ import annotations

BUILTIN_ALGORITHMS: dict[str, str] = {
    "fedavg": "fedsim.algorithms.fedavg:FedAvg",
    "fedadam": "fedsim.algorithms.fedadam:FedAdam",
}
