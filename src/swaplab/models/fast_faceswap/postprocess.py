"""Fast Face-swap's post-processing: keep the input's background and hair, clone the swapped face in.

The paper segments the input into background / hair / skin and stitches the network's face into the input
with OpenCV's seamless cloning; here the parsing expert's region groups give the mask and
`swaplab.imaging.seamless_clone` (cv2.seamlessClone, NORMAL_CLONE) does the cloning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from swaplab.imaging import seamless_clone


@torch.no_grad()
def parsing_mask(parsing: nn.Module, images: torch.Tensor, regions: Sequence[str] = ("face",)) -> torch.Tensor:
    """B x 1 x H x W hard mask of the parsing groups `regions` (default: the skin / inner face group)."""
    masks = parsing.masks(images, hard=True)
    unknown = [r for r in regions if r not in masks]
    if unknown or not regions:
        raise ValueError(f"unknown parsing regions {unknown or '(none given)'}; the parser has {sorted(masks)}")
    mask = torch.stack([masks[r] for r in regions]).sum(0).clamp(max=1).to(images.dtype)
    return mask  # seamless_clone drops the border rings and masks too small for OpenCV


@torch.no_grad()
def clone_face_back(swap: torch.Tensor, content: torch.Tensor, parsing: nn.Module,
               regions: Sequence[str] = ("face",)) -> tuple[torch.Tensor, torch.Tensor]:
    """(blended, mask): the swap's face region seamlessly cloned into the content image, whose background and
    hair stay exactly as they were."""
    mask = parsing_mask(parsing, content, regions)
    return seamless_clone(swap, content, mask, mode="normal"), mask
