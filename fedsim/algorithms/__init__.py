"""Built-in algorithms by name; any ``package.module:Class`` works too."""

from __future__ import annotations

BUILTIN_ALGORITHMS: dict[str, str] = {
    "fedavg": "fedsim.algorithms.fedavg:FedAvg",
    "fedadam": "fedsim.algorithms.fedadam:FedAdam",
    "per_fedavg": "fedsim.algorithms.per_fedavg:PerFedAvg",
    "pfedme": "fedsim.algorithms.pfedme:PFedMe",
    "fedavg_adam": "fedsim.algorithms.fedavg_adam:FedAvgAdam",
    "fedper": "fedsim.algorithms.fedper:FedPer",
    "ftl": "fedsim.algorithms.ftl:FTL",
    "fd": "fedsim.algorithms.fd:FederatedDistillation",
    "mocha": "fedsim.algorithms.mocha:Mocha",
}
