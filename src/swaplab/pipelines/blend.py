"""Face masks in crop space, colour correction and compositing of swapped crops back into frames (batched)."""

from __future__ import annotations

import kornia
import numpy as np
import torch

from swaplab.faces.templates import Template
from swaplab.imaging import seamless_clone


def ellipse_mask(template: Template, feather: float = 0.15, scale: float = 1.0) -> torch.Tensor:
    """1 x 1 x S x S soft ellipse over the face of `template`'s crop, placed from its five points: centred
    between the eyes and the mouth, 2.1 eye distances wide and 3 eye-to-mouth distances tall (brows to chin);
    the edge fades to 0 over `feather` of the radius."""
    pts = np.asarray(template.points, np.float64)
    eyes, mouth = pts[:2].mean(0), pts[3:].mean(0)
    eye_dist, eye_mouth = np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(mouth - eyes)
    center = (eyes + mouth) / 2 + (mouth - eyes) * 0.1
    axes = scale * np.array([1.05 * eye_dist, 1.5 * eye_mouth])
    angle = np.arctan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0])
    ys, xs = torch.meshgrid(torch.arange(template.size, dtype=torch.float64),
                            torch.arange(template.size, dtype=torch.float64), indexing="ij")
    dx, dy = xs - center[0], ys - center[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / axes[0]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / axes[1]
    radius = torch.sqrt(u**2 + v**2)
    return ((1 - radius) / max(feather, 1e-6)).clamp(0, 1).float()[None, None]


def feather_mask(mask: torch.Tensor, sigma_fraction: float = 0.02) -> torch.Tensor:
    """Soften a B x 1 x S x S mask with a Gaussian of sigma = fraction of the side (0: unchanged)."""
    sigma = sigma_fraction * mask.shape[-1]
    if sigma <= 0:
        return mask
    k = int(2 * round(3 * sigma) + 1)
    return kornia.filters.gaussian_blur2d(mask, (k, k), (sigma, sigma))


def match_colour(swap: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per face and channel, give the swap the target's mean and standard deviation inside `mask` (weights),
    a Reinhard-style transfer in RGB that removes the colour casts and lighting shifts a generator leaves."""
    w = mask / mask.sum((-2, -1), keepdim=True).clamp_min(eps)

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * w).sum((-2, -1), keepdim=True)
        return mean, ((x - mean).square() * w).sum((-2, -1), keepdim=True).sqrt()

    (ms, ss), (mt, st) = stats(swap), stats(target)
    return ((swap - ms) / ss.clamp_min(eps) * st + mt).clamp(-1, 1)


def paste_back(frames: torch.Tensor, crops: torch.Tensor, masks: torch.Tensor, matrices: torch.Tensor,
               frame_index: torch.Tensor, mode: str = "alpha") -> torch.Tensor:
    """Composite N swapped crops (N x 3 x S x S, masks N x 1 x S x S) into B frames (B x 3 x H x W, [-1, 1]).

    `matrices` (N x 2 x 3) map frame -> crop pixels; crop n goes into frame `frame_index[n]`. Several faces in
    one frame are pasted one after another (faces of equal rank in their frame go together in one batch).
    Pixels where the warped mask is 0 keep the frame's exact values. `mode`: "alpha" or "poisson"
    (OpenCV seamless cloning inside mask > 0.5, then alpha-feathered by the mask).
    """
    if mode not in ("alpha", "poisson"):
        raise ValueError(f"blend mode must be 'alpha' or 'poisson', got {mode!r}")
    out = frames.clone()
    if len(crops) == 0:
        return out
    size = frames.shape[-2:]
    inverse = kornia.geometry.transform.invert_affine_transform(matrices.to(frames))
    warped = kornia.geometry.transform.warp_affine(crops.to(frames), inverse, size, align_corners=True)
    alpha = kornia.geometry.transform.warp_affine(masks.to(frames), inverse, size, align_corners=True).clamp(0, 1)
    order = torch.argsort(frame_index, stable=True)
    frame_index, warped, alpha = frame_index[order], warped[order], alpha[order]
    rank = torch.arange(len(frame_index), device=frame_index.device) - torch.searchsorted(frame_index, frame_index)
    for r in range(int(rank.max()) + 1):
        sel = torch.nonzero(rank == r).flatten()
        idx = frame_index[sel]
        face, a = warped[sel], alpha[sel]
        if mode == "poisson":
            face = seamless_clone(face, out[idx], (a > 0.5).float())
        out[idx] = torch.where(a > 0, out[idx] * (1 - a) + face * a, out[idx])
    return out
