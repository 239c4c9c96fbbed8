"""Conversions between model tensors ([-1, 1], NCHW) and displayable uint8 images."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(…,3,H,W) float in [-1, 1] -> (…,H,W,3) uint8."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """(…,H,W,3) uint8 -> (…,3,H,W) float in [-1, 1]."""
    return images.movedim(-1, -3).float() / 127.5 - 1


def swap_grid(*columns: torch.Tensor) -> np.ndarray:
    """One row per sample, one column per tensor (e.g. source | target | swap), as a uint8 HxWx3 array."""
    rows = torch.cat(columns, dim=-1)  # B,3,H,k*W
    return to_uint8(torch.cat(list(rows), dim=-2)).cpu().numpy()  # B*H, k*W, 3
