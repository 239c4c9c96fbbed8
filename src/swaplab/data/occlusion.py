"""Random occluders pasted onto face crops, for FaceShifter's HEAR-Net training pairs.

The public HEAR-Net re-implementations paste hands (EgoHands cut-outs) and objects (ShapeNet renders) with a
random scale and rotation onto the target of each pair. Here every occluder is a per-sample affine frame
(centre, half-axes, rotation) filled either with a procedural shape (ellipse, rectangle, bar, sunglasses) in
a random colour/stripe texture, or with an RGBA image from `occluders_dir`. All of it is one batched pass per
occluder slot on the images' device; no per-sample Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# name -> (min aspect, max aspect, max rotation in degrees); aspect = short / long half-axis
SHAPES: dict[str, tuple[float, float, float]] = {
    "ellipse": (0.5, 1.0, 90.0),    # palms, fists, microphone heads
    "rectangle": (0.4, 1.0, 90.0),  # phones, papers, cups
    "bar": (0.1, 0.25, 90.0),       # fingers, pens, microphone handles, hair strands
    "glasses": (0.3, 0.45, 25.0),   # sunglasses: two lenses and a bridge
}
IMAGE_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


def _shape_distance(u: torch.Tensor, v: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Per-pixel distance in the occluder frame; <= 1 inside. u, v: (B,H,W); shape: (B,) index into SHAPES."""
    ellipse = torch.sqrt(u.square() + v.square())
    box = torch.maximum(u.abs(), v.abs())
    lenses = torch.sqrt(((u.abs() - 0.5) / 0.45).square() + (v / 0.9).square())
    bridge = torch.maximum(u.abs() / 0.1, (v + 0.3).abs() / 0.12)
    glasses = torch.minimum(lenses, bridge)
    by_shape = torch.stack([ellipse, box, box, glasses], dim=1)  # order of SHAPES
    return by_shape.gather(1, shape[:, None, None, None].expand(-1, 1, *u.shape[1:])).squeeze(1)


def load_occluder_bank(folder: str | Path, side: int) -> torch.Tensor:
    """RGBA images of a folder as an (N,4,side,side) tensor: premultiplied RGB in [-1,1]*alpha, then alpha.

    Each image is padded to a square (transparent) before resizing, so its aspect ratio is kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"occluders_dir={folder} is not a folder (RGBA cut-outs of hands/objects, e.g. .png)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"occluders_dir={folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    bank = []
    for path in paths:
        with Image.open(path) as image:
            rgba = image.convert("RGBA")
        square = Image.new("RGBA", (max(rgba.size),) * 2, (0, 0, 0, 0))
        square.paste(rgba, ((square.width - rgba.width) // 2, (square.height - rgba.height) // 2))
        array = np.asarray(square.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        bank.append(torch.from_numpy(array).permute(2, 0, 1))
    bank = torch.stack(bank)
    alpha = bank[:, 3:]
    return torch.cat([(bank[:, :3] * 2 - 1) * alpha, alpha], dim=1)


class RandomOccluders(nn.Module):
    """`forward(images) -> (occluded images, occluder alpha (B,1,H,W))` for a batch in [-1, 1].

    An image is occluded with probability `p`, by 1..`max_count` occluders (uniform); each has a random
    centre in the middle 70% of the crop, a long half-axis of `size` (fractions of the image side) and a
    rotation. The alpha mask is 0 outside every occluder, where the images are returned unchanged.
    """

    def __init__(
        self,
        p: float = 0.75,                              # probability that an image gets occluders at all
        max_count: int = 2,                           # occluders per occluded image: uniform in 1..max_count
        size: Sequence[float] = (0.1, 0.3),           # long half-axis range, as a fraction of the image side
        shapes: Sequence[str] = tuple(SHAPES),        # procedural shapes drawn from (names in SHAPES)
        occluders_dir: str | None = None,             # optional folder of RGBA cut-outs (hands, objects)
        image_rate: float = 0.5,                      # with occluders_dir: share of occluders taken from it
        bank_size: int = 128,                         # side the cut-outs are resized to, once
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0 or not 0.0 <= image_rate <= 1.0:
            raise ValueError(f"p and image_rate must be in [0, 1], got p={p}, image_rate={image_rate}")
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {max_count}")
        if len(size) != 2 or not 0.0 < size[0] <= size[1]:
            raise ValueError(f"size must be [min, max] with 0 < min <= max, got {list(size)}")
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes:
            raise ValueError(f"shapes must be a non-empty subset of {list(SHAPES)}, got {list(shapes)}")
        self.p, self.max_count, self.size = p, max_count, (float(size[0]), float(size[1]))
        self.image_rate = image_rate if occluders_dir else 0.0
        names = list(SHAPES)
        self.register_buffer("shape_ids", torch.tensor([names.index(s) for s in shapes]), persistent=False)
        self.register_buffer("shape_table", torch.tensor(list(SHAPES.values())), persistent=False)
        bank = load_occluder_bank(occluders_dir, bank_size) if occluders_dir else torch.zeros(0, 4, 1, 1)
        self.register_buffer("bank", bank, persistent=False)  # not a weight: never in checkpoints

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
        b, _, h, w = images.shape
        device, dtype = images.device, images.dtype

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, device=device, generator=generator)

        occluded = rand(b) < self.p
        count = 1 + (rand(b) * self.max_count).long().clamp_max(self.max_count - 1)
        keep = torch.ones(b, 1, h, w, device=device, dtype=dtype)  # product of (1 - alpha_k)
        out = images
        for slot in range(self.max_count):
            active = (occluded & (slot < count)).to(dtype)[:, None, None, None]
            fill, alpha = self._occluder(b, h, w, rand, dtype)
            alpha = alpha * active
            out = out * (1 - alpha) + fill * alpha
            keep = keep * (1 - alpha)
        return out, 1 - keep

    def _occluder(self, b: int, h: int, w: int, rand, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """One occluder per sample: colour (B,3,H,W) and alpha (B,1,H,W)."""
        shape = self.shape_ids[(rand(b) * len(self.shape_ids)).long().clamp_max(len(self.shape_ids) - 1)]
        min_aspect, max_aspect, max_angle = self.shape_table[shape].unbind(1)
        from_bank = rand(b) < self.image_rate
        long_axis = self.size[0] + (self.size[1] - self.size[0]) * rand(b)
        aspect = torch.where(from_bank, torch.ones_like(long_axis), min_aspect + (max_aspect - min_aspect) * rand(b))
        angle = torch.where(from_bank, torch.full_like(long_axis, 90.0), max_angle) * (2 * rand(b) - 1) * math.pi / 180
        centre = (rand(b, 2) * 2 - 1) * 0.7
        # Half-axes in normalized coordinates ([-1, 1] spans the side, so a fraction f of the side is f).
        half_u, half_v = 2 * long_axis, 2 * long_axis * aspect
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([
            torch.stack([cos / half_u, sin / half_u, -(cos * centre[:, 0] + sin * centre[:, 1]) / half_u], 1),
            torch.stack([-sin / half_v, cos / half_v, (sin * centre[:, 0] - cos * centre[:, 1]) / half_v], 1),
        ], 1)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # output pixel -> occluder frame
        u, v = grid[..., 0], grid[..., 1]

        edge = 2.0 / (min(h, w) * half_v)  # about one pixel, in occluder-frame units (anti-aliased border)
        alpha = ((1 - _shape_distance(u, v, shape)) / edge[:, None, None] + 0.5).clamp(0, 1)[:, None]
        colours = rand(b, 2, 3) * 2 - 1
        freq, direction, phase = 8 * rand(b), math.pi * rand(b), 2 * math.pi * rand(b)
        along = u * torch.cos(direction)[:, None, None] + v * torch.sin(direction)[:, None, None]
        stripes = (0.5 + 0.5 * torch.sin(freq[:, None, None] * along + phase[:, None, None]))[:, None]
        fill = colours[:, 0, :, None, None] + (colours[:, 1] - colours[:, 0])[:, :, None, None] * stripes

        if len(self.bank):
            index = (rand(b) * len(self.bank)).long().clamp_max(len(self.bank) - 1)
            sampled = F.grid_sample(self.bank[index].to(dtype), grid, align_corners=False, padding_mode="zeros")
            cut_alpha = sampled[:, 3:].clamp(0, 1)
            cut_colour = sampled[:, :3] / cut_alpha.clamp_min(1e-3)  # un-premultiply
            pick = from_bank[:, None, None, None]
            fill, alpha = torch.where(pick, cut_colour, fill), torch.where(pick, cut_alpha, alpha)
        return fill.to(dtype), alpha.to(dtype)
