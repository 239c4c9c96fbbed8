"""Reconstruction quality: each model swaps a target onto itself (model(target, target)) and the result is
compared with the target by LPIPS, SSIM and PSNR (images mapped from [-1, 1] to [0, 1] for SSIM / PSNR)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from swaplab.metrics.registry import SwapMetric, SwapRecord, cat_state, register_metric


class ReconstructionMetric(SwapMetric):
    """Per-example score of the self-swap against the target; the summary is the mean over examples."""

    needs_reconstruction = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def score(self, record: SwapRecord, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, record: SwapRecord) -> None:
        reconstruction, target = record.image("reconstruction").float(), record.target.float()
        self.values.append(self.score(record, reconstruction, target).reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values).mean()}

    def per_example(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values)}


@register_metric("lpips")
class ReconstructionLPIPS(ReconstructionMetric):
    """LPIPS distance of the self-swap to the target (lower is better)."""

    role_args = ("lpips_role",)
    higher_is_better = False

    def __init__(self, lpips_role: str = "lpips", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lpips_role = lpips_role

    def score(self, record: SwapRecord, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.expert("lpips_role")(reconstruction, target)


@register_metric("ssim")
class ReconstructionSSIM(ReconstructionMetric):
    """SSIM (Gaussian window 11, sigma 1.5) of the self-swap and the target, per image."""

    higher_is_better = True

    def score(self, record: SwapRecord, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return structural_similarity_index_measure((reconstruction + 1) / 2, (target + 1) / 2, data_range=1.0,
                                                   reduction="none")


@register_metric("psnr")
class ReconstructionPSNR(ReconstructionMetric):
    """PSNR in dB of the self-swap against the target, per image (the summary averages the per-image dB)."""

    higher_is_better = True

    def score(self, record: SwapRecord, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return peak_signal_noise_ratio((reconstruction + 1) / 2, (target + 1) / 2, data_range=1.0,
                                       reduction="none", dim=(1, 2, 3))
