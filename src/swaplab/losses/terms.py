"""Small loss terms shared by the methods. Each takes named tensors and returns a scalar."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample values where mask is true; 0 (with gradient path intact) when none is."""
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp_min(1.0)


class IdentityLoss(nn.Module):
    """1 - cos(z_id(result), z_id(source)), averaged over the batch."""

    def forward(self, embedding: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (1 - F.cosine_similarity(embedding, reference, dim=-1)).mean()


class ReconstructionLoss(nn.Module):
    """Pixel loss to the target on the pairs flagged in `where` (e.g. source == target).

    kind: "l1", "l2" or "half_l2" (FaceShifter's 0.5 * ||Y - X_t||^2, mean over pixels).
    """

    def __init__(self, kind: str = "l1") -> None:
        super().__init__()
        if kind not in ("l1", "l2", "half_l2"):
            raise ValueError(f"reconstruction kind must be l1, l2 or half_l2, got {kind!r}")
        self.kind = kind

    def per_sample(self, result: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = result - target
        per_pixel = diff.abs() if self.kind == "l1" else diff.square()
        return per_pixel.flatten(1).mean(1) * (0.5 if self.kind == "half_l2" else 1.0)

    def forward(self, result: torch.Tensor, target: torch.Tensor, where: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        """`scale` (B,): per-sample divisors (e.g. the same loss of a reference result: a relative error)."""
        per_sample = self.per_sample(result, target)
        if scale is not None:
            per_sample = per_sample / scale
        return per_sample.mean() if where is None else masked_mean(per_sample, where)


class MultiLevelFeatureLoss(nn.Module):
    """0.5 * sum over levels of the mean squared distance between feature lists (FaceShifter L_att)."""

    def forward(self, features: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        return 0.5 * sum(F.mse_loss(f, r) for f, r in zip(features, reference, strict=True))
