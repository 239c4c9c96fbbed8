"""HEAR-Net's training set (FaceShifter, Li et al. 2019): the faces a trained AEI-Net reconstructs worst.

The heuristic error of a face X_t is |X_t - AEI(X_t, z_id(X_t))|, the self-swap's error; the paper trains HEAR-Net
on the faces with the top 10% of it (public code: taotaonice/FaceShifter utils/split_hearnet_data.py scores every
face by its mean absolute error and copies the top 10%).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from swaplab.data.prepare import plan_batch, prepare_batch
from swaplab.models.faceshifter.module import FaceShifter


@torch.no_grad()
def heuristic_errors(aei: nn.Module, identity: nn.Module, dataset: Dataset, batch_size: int = 32,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """(len(dataset),) mean |X_t - AEI(X_t, z_id(X_t))| of every target crop k (the target of pair key k)."""
    scores = []
    for start in range(0, len(dataset), batch_size):
        batch = plan_batch(dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset))))))
        target = prepare_batch({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})["target"]
        self_swap, _ = aei(target, identity(target))
        scores.append((target - self_swap).abs().mean((1, 2, 3)).float().cpu())
    return torch.cat(scores)


def hardest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the `fraction` of largest scores (at least one), largest first."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, int(len(scores) * fraction))
    return torch.argsort(scores, descending=True, stable=True)[:count]


def aei_of(model: nn.Module, path: str) -> tuple[nn.Module, nn.Module]:
    """The AEI-Net (its EMA weights where kept) and identity expert of a loaded FaceShifter checkpoint."""
    if not isinstance(model, FaceShifter):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an AEI-Net (FaceShifter) checkpoint")
    return model.inference_generator, model.experts.identity
