"""FSGAN's four generators in one module, and the batched tensor helpers of its stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.resunet import MultiScaleResUNet

STAGES = ("segmentation", "reenactment", "inpainting", "blending")  # the training order
NUM_LANDMARKS = 68
BACKGROUND, FACE, HAIR = 0, 1, 2  # Gs classes (the synthetic `*_mask` and the parser's group labels agree)


class FSGANGenerators(nn.Module):
    """Gs, Gr, Gc, Gb by stage name. Each stage trains one of them; the earlier ones are loaded and frozen
    (FSGAN with model.predecessor_ckpt, swaplab.models.stages)."""

    def __init__(
        self,
        segmentation: nn.Module,             # Gs: RGB -> 3 class logits (background, face, hair); a U-Net
        reenactment: MultiScaleResUNet,      # Gr: RGB + 68 heatmaps -> RGB + 3 segmentation logits
        inpainting: MultiScaleResUNet,       # Gc: face with holes (RGB) + target face mask -> RGB
        blending: MultiScaleResUNet,         # Gb: transferred face (RGB) + target (RGB) + mask -> RGB
    ) -> None:
        super().__init__()
        expected = {"reenactment": (3 + NUM_LANDMARKS, 3), "inpainting": (4, 0), "blending": (7, 0)}
        for name, net in (("reenactment", reenactment), ("inpainting", inpainting), ("blending", blending)):
            if (net.in_channels, net.logit_channels) != expected[name] or net.out_channels != 3:
                raise ValueError(f"the {name} generator must map {expected[name][0]} channels to 3 image channels "
                                 f"+ {expected[name][1]} logits, got {net.in_channels} -> {net.out_channels} + "
                                 f"{net.logit_channels}")
        self.segmentation, self.reenactment = segmentation, reenactment
        self.inpainting, self.blending = inpainting, blending

    def __getitem__(self, stage: str) -> nn.Module:
        return getattr(self, stage)


def face_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """B x H x W class labels -> B x 1 x H x W boolean face mask."""
    return (labels == FACE).unsqueeze(1)


def transfer(face: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The face pasted into the target where `mask` (B x 1 x H x W, bool) is set."""
    return torch.where(mask, face, target)


def halve(x: torch.Tensor) -> torch.Tensor:
    """An image or map at half its side: float images averaged over 2x2 pixels, labels and boolean masks
    subsampled."""
    return F.avg_pool2d(x, 2) if x.is_floating_point() else x[..., ::2, ::2]


def half_resolution(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch at half its side (the first phase of progressive training): images and label maps halved,
    landmark pixel coordinates mapped to the smaller grid (pixel centres at i)."""
    out = dict(batch)
    for key, value in batch.items():
        if key in ("source", "target") or (key.endswith("_mask") and value.ndim == 3):
            out[key] = halve(value)
        elif key.endswith("_landmarks"):
            out[key] = (value + 0.5) / 2 - 0.5
    return out
