"""Fréchet Inception Distance of the swaps against the real target frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.experts.inception import InceptionFeatures
from swaplab.metrics.registry import SwapMetric, SwapRecord, register_metric


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Fréchet distance of two Gaussians."""
    from scipy import linalg  # scipy: only when FID is computed

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    root, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(root).all():  # singular product: regularise as pytorch-fid / the TF reference do
        offset = np.eye(len(sigma1)) * 1e-6
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


@register_metric("fid")
class FID(SwapMetric):
    """FID between the Inception pool features of the swaps and of the target frames (the real images).

    Feature sums and outer-product sums are `sum` states (float64), so DDP shards add up exactly. The Inception
    network is the `inception_role` expert when the experts have one, else `InceptionFeatures` loaded from the
    published file (`path`, or its registry name under `weights_dir`); a missing file raises one line naming
    it and where to get it."""

    role_args = ("inception_role",)
    higher_is_better = False

    def __init__(self, inception_role: str = "inception", path: str | None = None, weights_dir: str | None = None,
                 features: int = 2048, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inception_role, self.path, self.weights_dir = inception_role, path, weights_dir
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", default=torch.zeros(features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", default=torch.zeros(features, features, dtype=torch.float64),
                           dist_reduce_fx="sum")
            self.add_state(f"{side}_count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def bind(self, experts: Callable[[str], nn.Module]) -> None:
        try:
            self._experts[self.inception_role] = experts(self.inception_role)
        except ValueError:
            self._experts[self.inception_role] = InceptionFeatures.build(path=self.path, weights_dir=self.weights_dir)

    def _add(self, side: str, features: torch.Tensor) -> None:
        f = features.double()
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + f.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + f.T @ f)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + len(f))

    def update(self, record: SwapRecord) -> None:
        expert = self.expert("inception_role")
        if getattr(expert, "device", record.swap.device) != record.swap.device:
            expert.to(record.swap.device)
        self._add("fake", self.run(record, "inception_role", "swap"))
        self._add("real", self.run(record, "inception_role", "target"))

    def statistics(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance of one side's features."""
        n = float(getattr(self, f"{side}_count"))
        if n < 2:
            raise ValueError(f"FID needs at least 2 {side} images, got {n:.0f}")
        mean = getattr(self, f"{side}_sum") / n
        cov = (getattr(self, f"{side}_outer") - n * torch.outer(mean, mean)) / (n - 1)
        return mean.cpu().numpy(), cov.cpu().numpy()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"": torch.tensor(frechet_distance(*self.statistics("fake"), *self.statistics("real")))}
