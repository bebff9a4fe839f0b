"""Built-in models and the measured description (sizes, FLOPs, activations) of any model."""

from fedsim.models.footprint import training_footprint_bytes
from fedsim.models.info import LayerInfo, ModelInfo, describe
from fedsim.models.zoo import MODEL_NAMES, build_model

__all__ = [
    "MODEL_NAMES",
    "LayerInfo",
    "ModelInfo",
    "build_model",
    "describe",
    "training_footprint_bytes",
]
