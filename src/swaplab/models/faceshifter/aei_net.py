"""AEI-Net of FaceShifter: multi-level attributes encoder + AAD generator (plain nn.Modules).

With resolution 256, base_channels 32 and max_channels 1024 the widths are the paper's: encoder
32-64-128-256-512-1024-1024 down to 2x2, attribute maps z_att^1..8 of 1024@2, 2048@4, 1024@8, 512@16,
256@32, 128@64, 64@128, 64@256, and generator blocks 1024,1024,1024,512,256,128,64,3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.aad import AADResBlock


def _levels(resolution: int) -> int:
    if resolution < 8 or 2 ** round(math.log2(resolution)) != resolution:
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return int(math.log2(resolution)) - 1  # strided convs down to 2x2


def _encoder_widths(resolution: int, base_channels: int, max_channels: int) -> list[int]:
    return [min(base_channels * 2**k, max_channels) for k in range(_levels(resolution))]


def attribute_channels(resolution: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels of z_att^1 (2x2) ... z_att^n (full resolution)."""
    widths = _encoder_widths(resolution, base_channels, max_channels)
    return [widths[-1]] + [2 * w for w in reversed(widths[:-1])] + [2 * widths[0]]


class MultiLevelAttributeEncoder(nn.Module):
    """U-Net-like encoder whose decoder features at every scale are the attributes z_att^k."""

    def __init__(
        self,
        resolution: int = 256,  # input side; maps go down to 2x2
        base_channels: int = 32,  # width of the first strided conv (doubles per level)
        max_channels: int = 1024,  # width cap
    ) -> None:
        super().__init__()
        widths = _encoder_widths(resolution, base_channels, max_channels)
        self.down = nn.ModuleList()
        in_ch = 3
        for w in widths:
            self.down.append(nn.Sequential(nn.Conv2d(in_ch, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w),
                                           nn.LeakyReLU(0.1, True)))
            in_ch = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.Sequential(nn.ConvTranspose2d(in_ch, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w),
                                         nn.LeakyReLU(0.1, True)))
            in_ch = 2 * w

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        attrs = [x]
        for layer, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = torch.cat([layer(x), skip], dim=1)
            attrs.append(x)
        attrs.append(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return attrs


class AADGenerator(nn.Module):
    """z_id -> 2x2 map -> AAD ResBlks (one per attribute level, upsampling between) -> tanh RGB."""

    def __init__(
        self,
        resolution: int = 256,  # output side
        base_channels: int = 32,  # must match the attribute encoder's
        max_channels: int = 1024,  # width cap
        id_dim: int = 512,  # identity vector length
        norm: str = "instance",  # normalization inside the AAD layers
    ) -> None:
        super().__init__()
        attr_ch = attribute_channels(resolution, base_channels, max_channels)
        out_ch = [min(c, max_channels) for c in attr_ch[:-1]] + [3]
        self.stem = nn.ConvTranspose2d(id_dim, out_ch[0], kernel_size=2)
        in_ch = [out_ch[0]] + out_ch[:-1]
        self.blocks = nn.ModuleList(
            AADResBlock(i, o, a, id_dim, norm) for i, o, a in zip(in_ch, out_ch, attr_ch, strict=True)
        )

    def forward(self, z_att: list[torch.Tensor], z_id: torch.Tensor) -> torch.Tensor:
        h = self.stem(z_id[..., None, None])
        for k, (block, attr) in enumerate(zip(self.blocks, z_att, strict=True)):
            h = block(h, attr, z_id)
            if k < len(self.blocks) - 1:
                h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        return torch.tanh(h)


class AEINet(nn.Module):
    """Adaptive Embedding Integration Network: Y = G(E_att(X_t), z_id(X_s))."""

    def __init__(self, resolution: int = 256, base_channels: int = 32, max_channels: int = 1024,
                 id_dim: int = 512, norm: str = "instance") -> None:
        super().__init__()
        self.resolution = resolution
        self.encoder = MultiLevelAttributeEncoder(resolution, base_channels, max_channels)
        self.generator = AADGenerator(resolution, base_channels, max_channels, id_dim, norm)

    def forward(self, target: torch.Tensor, z_id: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if target.shape[-1] != self.resolution or target.shape[-2] != self.resolution:
            raise ValueError(f"AEINet built for {self.resolution}px, got input of shape {tuple(target.shape)}")
        z_att = self.encoder(target)
        return self.generator(z_att, z_id), z_att
