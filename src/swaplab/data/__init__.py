"""Datasets, the datamodule, alignment templates and preprocessing. Names are imported on first use, so
tools that only need templates or the store (preprocess.py) do not pay for importing Lightning."""

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
    "get_template": "swaplab.data.templates",
    "convert_crops": "swaplab.data.templates",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'swaplab.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
