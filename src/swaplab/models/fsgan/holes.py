"""Inpainting holes for Gc, shaped like the official FSGAN ones (own code, batched on the device).

The official training (v1 and master `seg_utils.random_hair_inpainting_mask`, per sample in NumPy / OpenCV)
simulates hair over the face border: a random row of the face mask, its leftmost or rightmost face pixel as the
centre, a filled ellipse there with both semi-axes drawn from [w/4, w/2) (w: the face's width) and a random
rotation in [0, 180) degrees; the hole is that ellipse inside the face mask. So every hole sits on the face's
border and lies within the face. Here the same recipe runs for the whole batch at once from five uniform
draws per sample (`draws`, B x 5 in [0, 1); training draws them from the step's generator,
SwapModule.step_generator, so every process and step has its own, the same on resume).
"""

from __future__ import annotations

import math

import torch

HOLE_DRAWS = 5  # uniform numbers per sample: row, side, two semi-axes, rotation
MIN_FACE_EXTENT = 10 / 256  # official: no hole when the face spans <= 10 px (of a 128 / 256 crop); here a fraction


def hair_holes(face: torch.Tensor, draws: torch.Tensor | None = None, generator: torch.Generator | None = None,
               min_face_extent: float = MIN_FACE_EXTENT) -> torch.Tensor:
    """B x 1 x H x W boolean holes inside the boolean face masks `face` (B x 1 x H x W): an ellipse centred on
    the face's left or right border at a random face row, cut by the face. `draws` (B x HOLE_DRAWS, uniform in
    [0, 1)) fix the holes; without them they are drawn from `generator` (else the global RNG). A face that spans
    no more than `min_face_extent` of the side in height or width (or is empty) gets no hole."""
    b, _, h, w = face.shape
    device = face.device
    if draws is None:
        draws = torch.rand(b, HOLE_DRAWS, device=device, generator=generator)
    if draws.shape != (b, HOLE_DRAWS):
        raise ValueError(f"hole draws must be {b} x {HOLE_DRAWS}, got {tuple(draws.shape)}")
    draws = draws.to(device, torch.float32)
    mask = face[:, 0].bool()
    rows, cols = mask.any(2), mask.any(1)  # B x H, B x W: the rows / columns with face pixels
    n_rows = rows.sum(1)
    # the k-th face row (k uniform over the face rows): the number of rows before the (k+1)-th face row
    k = torch.minimum((draws[:, 0] * n_rows).long(), (n_rows - 1).clamp(min=0))
    y = (rows.cumsum(1) <= k[:, None]).sum(1).clamp(max=h - 1)
    line = mask[torch.arange(b, device=device), y]  # B x W: the face pixels of that row
    left = line.int().argmax(1)
    right = w - 1 - line.flip(1).int().argmax(1)
    x = torch.where(draws[:, 1] > 0.5, left, right)  # its leftmost or rightmost face pixel

    def extent(present: torch.Tensor) -> torch.Tensor:  # last - first index of the True entries
        n = present.shape[1]
        return (n - 1 - present.flip(1).int().argmax(1)) - present.int().argmax(1)

    width = extent(cols) + 1
    limit = min_face_extent * max(h, w)
    valid = rows.any(1) & (extent(rows) > limit) & (extent(cols) > limit)
    low, high = width // 4, width // 2  # semi-axes in [w/4, w/2) pixels, as NumPy's randint(w // 4, w // 2)
    axes = low[:, None] + (draws[:, 2:4] * (high - low)[:, None]).floor()
    axes = axes.clamp(min=0.5)  # a degenerate face still gives a finite ellipse (and no hole: `valid`)
    angle = (draws[:, 4] * 180).floor() * (math.pi / 180)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    dx = torch.arange(w, device=device, dtype=torch.float32)[None, None, :] - x[:, None, None]
    dy = torch.arange(h, device=device, dtype=torch.float32)[None, :, None] - y[:, None, None]
    along, across = dx * cos + dy * sin, dy * cos - dx * sin  # in the ellipse's rotated frame
    inside = (along / axes[:, 0, None, None]) ** 2 + (across / axes[:, 1, None, None]) ** 2 <= 1
    return (inside & mask & valid[:, None, None]).unsqueeze(1)
