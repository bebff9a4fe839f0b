"""Datasets (digits, synthetic, MNIST) and their partitions over devices."""

from fedsim.data.datasets import DATASET_NAMES, Dataset, data_dir_from_env, load_dataset
from fedsim.data.partition import PARTITION_KINDS, DevicePartition, partition

__all__ = [
    "DATASET_NAMES",
    "PARTITION_KINDS",
    "Dataset",
    "DevicePartition",
    "data_dir_from_env",
    "load_dataset",
    "partition",
]
