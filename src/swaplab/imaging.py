"""Image batches: conversions between model tensors ([-1, 1], NCHW) and uint8 images, and Poisson
(gradient-domain) blending through OpenCV's seamless cloning.

FSGAN's blending target, Fast Face-swap's paste-back and the inference pipeline's `poisson` blend all use
`cv2.seamlessClone` (NORMAL_CLONE). OpenCV solves one image at a time in C++ (releasing the GIL), so a batch is
spread over a small thread pool.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
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


CLONE_MODES = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}


def clone_center(mask: np.ndarray) -> tuple[int, int] | None:
    """The `p` argument that makes seamlessClone paste the mask region back at its own place (no shift)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
    return x0 + w // 2, y0 + h // 2


def seamless_clone_uint8(source: np.ndarray, target: np.ndarray, mask: np.ndarray, mode: str = "normal") -> np.ndarray:
    """One image: H x W x 3 uint8 source/target, H x W uint8/bool mask (nonzero = paste). The mask's two outer
    pixel rings are dropped (the solver needs a boundary inside the image; OpenCV 5 asserts otherwise); a mask
    left empty or under 3 pixels high or wide (OpenCV asserts too) returns the target unchanged."""
    if mode not in CLONE_MODES:
        raise ValueError(f"clone mode must be one of {sorted(CLONE_MODES)}, got {mode!r}")
    mask = (np.asarray(mask) > 0).astype(np.uint8) * 255
    mask[:2, :] = mask[-2:, :] = mask[:, :2] = mask[:, -2:] = 0
    center = clone_center(mask)
    ys, xs = np.nonzero(mask)
    if center is None or np.ptp(ys) < 2 or np.ptp(xs) < 2:
        return target.copy()
    return cv2.seamlessClone(np.ascontiguousarray(source), np.ascontiguousarray(target), mask, center,
                             CLONE_MODES[mode])


def seamless_clone(source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mode: str = "normal",
                   threads: int = 4) -> torch.Tensor:
    """Batched Poisson blending: B x 3 x H x W images in [-1, 1], B x 1 x H x W masks (> 0.5 = source
    region). Returns the blended batch on the target's device and dtype (no gradient flows through it);
    pixels outside the mask are the target's own values."""
    if source.shape != target.shape or source.ndim != 4 or source.shape[1] != 3:
        raise ValueError(f"source and target must both be B x 3 x H x W, got {tuple(source.shape)} and "
                         f"{tuple(target.shape)}")
    if mask.shape != (source.shape[0], 1, *source.shape[2:]):
        raise ValueError(f"mask must be B x 1 x H x W = {(source.shape[0], 1, *source.shape[2:])}, "
                         f"got {tuple(mask.shape)}")
    src, dst = to_uint8(source).cpu().numpy(), to_uint8(target).cpu().numpy()  # B x H x W x 3
    masks = (mask.detach()[:, 0] > 0.5).cpu().numpy()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(src)))) as pool:
        blended = list(pool.map(seamless_clone_uint8, src, dst, masks, [mode] * len(src)))
    blended = from_uint8(torch.from_numpy(np.stack(blended)).to(target.device)).to(target.dtype)
    return torch.where(mask > 0.5, blended, target.detach())  # outside the mask: the target, not its uint8 copy
