"""Centralised baselines (PerFit's SVM, kNN, RF, c3NN/cCNN) scored on every device's test split."""

from fedsim.baselines.centralised import (
    METHODS,
    BaselineOptions,
    PooledData,
    parse_methods,
    pooled_data,
    run_baselines,
    summarise,
)

__all__ = [
    "METHODS",
    "BaselineOptions",
    "PooledData",
    "parse_methods",
    "pooled_data",
    "run_baselines",
    "summarise",
]
