"""Multi-scale residual U-Net (FSGAN's Gr, Gc and Gb): a residual U-Net "global" generator on a half-resolution
copy of the input and pix2pixHD local enhancers that add one full-resolution level each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.layers import make_norm


def conv_block(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, norm: str = "batch",
               act: bool = True) -> nn.Sequential:
    """Reflection-padded conv -> norm -> ReLU (the conv has no bias, as in the official blocks)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2),
                               nn.Conv2d(in_channels, out_channels, kernel, stride, bias=False),
                               make_norm(norm, out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x -> ReLU(x + norm(conv(ReLU(norm(conv(x))))))."""

    def __init__(self, channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(conv_block(channels, channels, norm=norm),
                                  conv_block(channels, channels, norm=norm, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def flat_block(channels: int, blocks: int, norm: str) -> nn.Module:
    return nn.Sequential(*(ResidualBlock(channels, norm) for _ in range(blocks)))


def down_block(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """Strided conv (2x down) then a conv, both conv-norm-ReLU."""
    return nn.Sequential(conv_block(in_channels, out_channels, stride=2, norm=norm),
                         conv_block(out_channels, out_channels, norm=norm))


class UpBlock(nn.Module):
    """Bilinear 2x up-sampling then conv-norm-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv = conv_block(in_channels, out_channels, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class OutputHeads(nn.Module):
    """7x7 convs without bias (as the official out_conv) to `image_channels` (tanh, in [-1, 1]) and
    `logit_channels` (raw, e.g. segmentation logits; v1's split head puts a tanh on these too), concatenated
    along channels in that order."""

    def __init__(self, channels: int, image_channels: int, logit_channels: int) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(channels, image_channels, 7, bias=False))
        self.logits = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(channels, logit_channels, 7, bias=False)) \
            if logit_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = torch.tanh(self.image(x))
        return image if self.logits is None else torch.cat([image, self.logits(x)], dim=1)


class SkipLevel(nn.Module):
    """One U-Net level: x + up(inner(down(x))), then residual blocks at this level's width."""

    def __init__(self, channels: int, inner_channels: int, inner: nn.Module | None, flat_blocks: int,
                 norm: str) -> None:
        super().__init__()
        self.inner = inner
        if inner is not None:
            self.down = down_block(channels, inner_channels, norm)
            self.up = UpBlock(inner_channels, channels, norm)
        self.flat = flat_block(channels, flat_blocks, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner is not None:
            x = x + self.up(self.inner(self.down(x)))
        return self.flat(x)


class MultiScaleResUNet(nn.Module):
    """FSGAN's multi-scale residual U-Net (official v1 experiments: base_channels 128, one enhancer, flat_blocks
    (2, 0, 2, 3) for Gr and Gc, (1, 0, 1, 1) for Gb; Gr: 71 -> 3 + 3 channels, Gc: 4 -> 3, Gb: 7 -> 3).

    The global residual U-Net works on the input down-sampled by 2 ** num_enhancers with
    base_channels * 2 ** num_enhancers channels; each enhancer adds a finer level as the official v1 / master
    LocalEnhancer: its input conv at that level's width, a stride-2 down block to the coarser width, the sum
    with the coarser features, its residual blocks there (e.g. 256 channels at 128 px for a 256 px Gr), then an
    up block to the finer level (v1 widths: Gr 94.7M, Gc 93.4M, Gb 49.8M). `forward(x, global_only=True)` runs the global
    network alone on `x` at the resolution given (the first phase of progressive 128 -> 256 training).
    Output: `out_channels` tanh image channels, then `logit_channels` raw logits (B x C x H x W).
    """

    def __init__(
        self,
        in_channels: int,                           # e.g. 3 + 68 landmark heatmaps (Gr), 4 (Gc), 7 (Gb)
        out_channels: int = 3,                      # tanh image channels
        logit_channels: int = 0,                    # extra raw output channels (Gr: 3 segmentation logits)
        base_channels: int = 64,                    # width at full resolution (official ngf)
        max_channels: int = 1024,                   # width cap
        flat_blocks: Sequence[int] = (0, 0, 0, 3),  # residual blocks per level, full resolution first
        num_enhancers: int = 1,                     # pix2pixHD local enhancers (full-resolution levels)
        norm: str = "batch",                        # "batch", "instance" or "none"
    ) -> None:
        super().__init__()
        if not 0 <= num_enhancers < len(flat_blocks):
            raise ValueError(f"num_enhancers must be in [0, {len(flat_blocks)}), got {num_enhancers}")
        self.in_channels, self.out_channels, self.logit_channels = in_channels, out_channels, logit_channels
        self.num_enhancers, self.depth = num_enhancers, len(flat_blocks)

        def width(level: int) -> int:  # level 0 = full resolution
            return min(base_channels * 2**level, max_channels)

        inner = None
        for level in reversed(range(num_enhancers, len(flat_blocks))):
            inner = SkipLevel(width(level), width(level + 1), inner, flat_blocks[level], norm)
        self.global_in = conv_block(in_channels, width(num_enhancers), kernel=7, norm=norm)
        self.global_unet = inner
        self.global_out = OutputHeads(width(num_enhancers), out_channels, logit_channels)
        self.enhancers = nn.ModuleList()
        for level in reversed(range(num_enhancers)):
            self.enhancers.append(nn.ModuleDict({
                "input": conv_block(in_channels, width(level), kernel=7, norm=norm),
                "down": down_block(width(level), width(level + 1), norm),
                "flat": flat_block(width(level + 1), flat_blocks[level], norm),
                "up": UpBlock(width(level + 1), width(level), norm),
            }))
        self.enhancer_out = OutputHeads(width(0), out_channels, logit_channels) if num_enhancers else None

    def forward(self, x: torch.Tensor, global_only: bool = False) -> torch.Tensor:
        levels = 1 if global_only else self.num_enhancers + 1
        factor = 2**(self.depth - 1 - self.num_enhancers + levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"MultiScaleResUNet input side {tuple(x.shape[-2:])} must be divisible by {factor}")
        pyramid = [x]
        for _ in range(levels - 1):
            pyramid.append(F.interpolate(pyramid[-1], scale_factor=0.5, mode="bilinear", align_corners=False))
        features = self.global_unet(self.global_in(pyramid[-1]))
        if levels == 1:
            return self.global_out(features)
        for enhancer, image in zip(self.enhancers, reversed(pyramid[:-1]), strict=True):
            features = enhancer["up"](enhancer["flat"](enhancer["down"](enhancer["input"](image)) + features))
        return self.enhancer_out(features)
