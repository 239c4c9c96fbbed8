"""U-Nets: the classic pooled one (Ronneberger et al. 2015; FSGAN's segmentation network Gs) and the strided one
(pix2pix layout; FaceShifter's HEAR-Net)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.layers import conv_norm_act, make_norm


class UNet(nn.Module):
    """Encoder of double-conv levels with 2x max-pooling between them, a mirrored decoder that up-samples
    (transposed conv or bilinear), concatenates the skip of the same level and applies a double conv, and a
    1x1 conv to `out_channels` (logits / unbounded values; the caller applies any activation).

    The input side must be divisible by 2 ** (len(widths) - 1).
    """

    def __init__(
        self,
        in_channels: int,                 # e.g. 3 (RGB) for Gs, 6 (Y_st and the heuristic error) for HEAR-Net
        out_channels: int,                # e.g. 3 segmentation classes, or 3 RGB channels
        widths: Sequence[int] = (64, 128, 256, 512, 1024),  # channels per level, full resolution first
        norm: str = "batch",              # "batch", "instance" or "none"
        upsample: str = "deconv",         # "deconv" (transposed 2x2 conv) or "bilinear" (+ 1x1 conv)
        act: str = "relu",                # "relu" or "lrelu"
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least two levels, got widths={list(widths)}")
        if upsample not in ("deconv", "bilinear"):
            raise ValueError(f"upsample must be 'deconv' or 'bilinear', got {upsample!r}")
        self.widths = tuple(widths)

        def double_conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(conv_norm_act(cin, cout, norm, act=act), conv_norm_act(cout, cout, norm, act=act))

        self.down = nn.ModuleList()
        ch = in_channels
        for width in self.widths:
            self.down.append(double_conv(ch, width))
            ch = width
        self.up, self.merge = nn.ModuleList(), nn.ModuleList()
        for width in reversed(self.widths[:-1]):
            if upsample == "deconv":
                self.up.append(nn.ConvTranspose2d(ch, width, 2, stride=2))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                             nn.Conv2d(ch, width, 1)))
            self.merge.append(double_conv(2 * width, width))
            ch = width
        self.head = nn.Conv2d(ch, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (len(self.widths) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"U-Net input side {tuple(x.shape[-2:])} must be divisible by {factor}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class StridedUNet(nn.Module):
    """U-Net whose levels halve the side with strided convolutions (the pix2pix layout; FaceShifter's HEAR-Net in
    the paper and public code: five down-samplings, 256 -> 8x8). Encoder: per width a 4x4 stride-2 conv, norm and
    LeakyReLU(0.1). Decoder: per level a 4x4 stride-2 transposed conv, norm and LeakyReLU, concatenated after the
    encoder map of its size; then a bilinear 2x up-sampling to the input side and a 3x3 conv `head` to
    `out_channels` (unbounded: the caller applies any activation).

    The input side must be divisible by 2 ** len(widths).
    """

    def __init__(
        self,
        in_channels: int,                 # e.g. 6 for HEAR-Net (Y^_st and the heuristic error)
        out_channels: int,                # e.g. 3 RGB channels
        widths: Sequence[int] = (64, 128, 256, 512, 512),  # channels after each down-sampling
        norm: str = "batch",              # "batch", "instance" or "none"
        slope: float = 0.1,               # LeakyReLU negative slope (public HEAR-Net: 0.1)
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least two levels, got widths={list(widths)}")
        self.widths = tuple(widths)

        def block(conv: nn.Module, width: int) -> nn.Sequential:
            return nn.Sequential(conv, make_norm(norm, width), nn.LeakyReLU(slope, inplace=True))

        self.down = nn.ModuleList()
        ch = in_channels
        for width in self.widths:
            self.down.append(block(nn.Conv2d(ch, width, 4, 2, 1, bias=norm == "none"), width))
            ch = width
        self.up = nn.ModuleList()
        for width in reversed(self.widths[:-1]):
            self.up.append(block(nn.ConvTranspose2d(ch, width, 4, 2, 1, bias=norm == "none"), width))
            ch = 2 * width  # with the encoder map of that size
        self.head = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** len(self.widths)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"U-Net input side {tuple(x.shape[-2:])} must be divisible by {factor}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for up in self.up:
            x = torch.cat([skips.pop(), up(x)], dim=1)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(x)
