"""Additive angular margin (ArcFace, Deng et al. CVPR 2019): the classification loss face recognizers are trained
with. Class centres W are unit vectors; the true class's logit is s cos(theta + m), the others s cos(theta)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AdditiveAngularMargin(nn.Module):
    """Cross-entropy over `num_classes` identities with ArcFace's margin; holds the class centres (trainable)."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 32.0, margin: float = 0.3) -> None:
        super().__init__()
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"margin must be in [0, pi/2), got {margin}")
        self.centres = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.scale = float(scale)
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        self.margin = float(margin)
        # beyond theta = pi - m, cos(theta + m) would rise again: continue linearly instead (as InsightFace does)
        self.threshold, self.fallback = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.centres, dim=1)).clamp(-1, 1)
        true = cos.gather(1, labels[:, None])
        sin = (1 - true.square()).clamp_min(1e-12).sqrt()
        with_margin = torch.where(true > self.threshold, true * math.cos(self.margin) - sin * math.sin(self.margin),
                                  true - self.fallback)
        return self.scale * cos.scatter(1, labels[:, None], with_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)
