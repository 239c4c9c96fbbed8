"""Landmark conditioning for FSGAN's reenactment generator: Gaussian heatmaps and the linear path of landmarks
from the source's view to the target's (the midpoint of stepwise training, the steps of inference)."""

from __future__ import annotations

import torch


def landmark_heatmaps(points: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """One Gaussian per landmark: B x K x 2 pixel coordinates (x, y) -> B x K x size x size maps in [0, 1],
    exp(-d^2 / (2 sigma^2)) with d the distance from the pixel centre (pixel i covers [i, i + 1), centre i)
    to the landmark; each map is 1 exactly at a landmark lying on a pixel centre."""
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"landmarks must be B x K x 2, got {tuple(points.shape)}")
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be > 0, got {sigma}")
    grid = torch.arange(size, device=points.device, dtype=points.dtype)
    dx = (grid.view(1, 1, 1, size) - points[..., 0, None, None]).square()  # B x K x 1 x S
    dy = (grid.view(1, 1, size, 1) - points[..., 1, None, None]).square()  # B x K x S x 1
    return torch.exp(-(dx + dy) / (2 * sigma**2))


def interpolation_weights(num_steps: int, device: torch.device | None = None) -> torch.Tensor:
    """t_j = j / num_steps for j = 0..num_steps: 0 (the source's view) to 1 (the target's), exactly."""
    if num_steps < 1:
        raise ValueError(f"the reenactment needs at least one step, got {num_steps}")
    return torch.arange(num_steps + 1, device=device, dtype=torch.float32) / num_steps


def interpolate_views(source: torch.Tensor, target: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Linear path from `source` to `target` (any B x ... tensors, e.g. landmarks B x 68 x 2):
    (num_steps + 1) x B x ..., step 0 equal to the source and the last step equal to the target exactly."""
    if source.shape != target.shape:
        raise ValueError(f"source and target views differ in shape: {tuple(source.shape)} vs {tuple(target.shape)}")
    t = interpolation_weights(num_steps, source.device).to(source.dtype).view(-1, *([1] * source.ndim))
    path = torch.lerp(source.unsqueeze(0), target.unsqueeze(0), t)
    path[-1] = target  # lerp at t = 1 is a + (b - a), which can round away from b
    return path
