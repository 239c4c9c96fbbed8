"""Training on a listed subset of a pair dataset's targets: HEAR-Net's hard samples (FaceShifter, Li et al. 2019),
the faces with the largest heuristic error, written by `python hard_samples.py` (swaplab.tasks.hard_samples).

A subset file is JSON: {"kind": "target_subset", "size": <length of the dataset it was scored on>, "indices":
[crop indices, hardest first], "scores": [...], "fraction": ..., "scored_with": {...}}. Crop k is the target of
the dataset's pair key k (every swap dataset: the synthetic faces, FacePairs, MixedPairs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

KIND = "target_subset"


def write_subset(path: str | Path, indices: list[int], scores: list[float], size: int, **record: Any) -> Path:
    """Write a subset file (indices hardest first) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": KIND, "size": int(size), "indices": [int(i) for i in indices],
                                "scores": [float(s) for s in scores], **record}, indent=1))
    return path


def read_subset(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target subset {path} does not exist (write it with python hard_samples.py "
                                "aei_ckpt=<FaceShifter checkpoint> output=<file> [data=...])")
    subset = json.loads(path.read_text())
    if subset.get("kind") != KIND or not subset.get("indices"):
        raise ValueError(f"{path} is not a target subset file with indices (python hard_samples.py writes them)")
    return subset


class TargetSubset(Dataset):
    """`dataset` with its targets restricted to the crops of a subset file: pair k is the dataset's pair of key
    indices[k % m] (+ the epoch's offset when the dataset draws new sources every epoch), so sources and pair
    kinds are drawn by the dataset as before (same-image pairs pair a hard face with itself)."""

    def __init__(self, dataset: Dataset, path: str | Path) -> None:
        subset = read_subset(path)
        if subset["size"] != len(dataset):
            raise ValueError(f"{path} lists crops of a dataset of {subset['size']} faces, this training set has "
                             f"{len(dataset)}: score this data with hard_samples.py (same data config)")
        self.dataset, self.path = dataset, str(path)
        self.indices = torch.tensor(subset["indices"], dtype=torch.long)
        if self.indices.min() < 0 or self.indices.max() >= len(dataset):
            raise ValueError(f"{path} lists crops outside [0, {len(dataset)})")
        self.pairs_vary_by_epoch = getattr(dataset, "pairs_vary_by_epoch", False)
        for name in ("template", "resolution"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.indices)

    def keys(self, indices: list[int]) -> list[int]:
        """The wrapped dataset's pair keys of this subset's pair keys."""
        k = torch.as_tensor(indices, dtype=torch.long)
        epoch = k // len(self) if self.pairs_vary_by_epoch else torch.zeros_like(k)
        return (self.indices[k % len(self)] + epoch * len(self.dataset)).tolist()

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.dataset.__getitems__(self.keys(indices))
        batch["index"] = torch.as_tensor(indices, dtype=torch.long)
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}
