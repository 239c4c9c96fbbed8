"""Fast Face-swap's multiscale transformation network (Korshunova et al. 2017, Figure 3; Ulyanov et al. 2016's
texture-net architecture).

Branches see the input downsampled to 8, 16, ..., S pixels (S = 128 in the paper: five branches, about 1M
parameters; one more branch per doubling of the side). Each branch runs a block of zero-padded convolutions
(3x3, 3x3, 1x1, each with normalization and ReLU); the running result is upsampled 2x (nearest neighbour),
concatenated with the next branch along channels and passed through another block. The top (full-resolution)
branch ends in a 1x1 convolution to RGB: the output comes from it alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.layers import conv_norm_act

LOWEST_SIDE = 8  # the coarsest branch (the paper's 8x8)


def conv_block(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """3x3, 3x3, 1x1 convolutions, each followed by normalization and ReLU."""
    return nn.Sequential(conv_norm_act(in_channels, out_channels, norm), conv_norm_act(out_channels, out_channels, norm),
                         conv_norm_act(out_channels, out_channels, norm, kernel=1))


class TransformationNet(nn.Module):
    """x (B,3,S,S) in [-1, 1] -> x_hat (B,3,S,S) in [-1, 1]: the target identity's feed-forward swap."""

    def __init__(
        self,
        resolution: int = 128,  # input side S: 8 * 2**k (branches at 8, 16, ..., S)
        branch_channels: int = 32,  # width of the block that reads each downsampled copy of the input
        join_channels: Sequence[int] = (64, 96, 128, 160),  # width of the block after each join, coarse to fine
        norm: str = "batch",  # normalization in every block (texture nets: batch norm)
    ) -> None:
        super().__init__()
        levels = math.log2(resolution / LOWEST_SIDE) if resolution >= LOWEST_SIDE else -1
        if levels < 0 or not float(levels).is_integer():
            raise ValueError(f"resolution must be 8 * 2**k (8, 16, ..., 128, 256), got {resolution}")
        join_channels = [int(c) for c in join_channels]
        if len(join_channels) < int(levels):  # larger inputs: one more branch per doubling, widths keep growing
            step = join_channels[-1] - (join_channels[-2] if len(join_channels) > 1 else branch_channels)
            join_channels += [join_channels[-1] + step * (i + 1) for i in range(int(levels) - len(join_channels))]
        self.resolution, self.join_channels = resolution, join_channels[: int(levels)]
        self.sides = [LOWEST_SIDE << k for k in range(int(levels) + 1)]
        self.branches = nn.ModuleList(conv_block(3, branch_channels, norm) for _ in self.sides)
        joins, channels = [], branch_channels
        for width in self.join_channels:
            joins.append(conv_block(channels + branch_channels, width, norm))
            channels = width
        self.joins = nn.ModuleList(joins)
        self.to_rgb = nn.Conv2d(channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"expected {self.resolution}x{self.resolution} inputs, got {tuple(x.shape)}")
        copies = [F.interpolate(x, size=(s, s), mode="area") if s < self.resolution else x for s in self.sides]
        h = self.branches[0](copies[0])
        for branch, join, copy in zip(self.branches[1:], self.joins, copies[1:], strict=True):
            h = join(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), branch(copy)], 1))
        return torch.tanh(self.to_rgb(h))
