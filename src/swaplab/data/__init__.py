"""Datasets, pair sampling, the datamodule and augmentation. Names are imported on first use, so tools that only
need the store (preprocess.py) do not pay for importing Lightning."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SwapDataModule": "swaplab.data.datamodule",
    "SyntheticSwapDataset": "swaplab.data.synthetic",
    "FaceFolderPairs": "swaplab.data.folders",
    "FaceForensicsPairs": "swaplab.data.ffpp",
    "PreprocessedFacePairs": "swaplab.data.store",
    "FaceStore": "swaplab.data.store",
    "MixedPairs": "swaplab.data.pairs",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'swaplab.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
