from swaplab.experts.arcface import IdentityEncoder, IResNet
from swaplab.experts.base import Experts, FrozenExpert
from swaplab.experts.registry import (
    WEIGHTS,
    MissingWeightsError,
    UnsafeCheckpointError,
    WeightEntry,
    load_tensors,
    register_weights,
    resolve_weights,
)

__all__ = [
    "WEIGHTS", "Experts", "FrozenExpert", "IResNet", "IdentityEncoder", "MissingWeightsError",
    "UnsafeCheckpointError", "WeightEntry", "load_tensors", "register_weights", "resolve_weights",
]
