"""Discriminators shared by several methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.resblocks import ResBlock


class PatchDiscriminator(nn.Module):
    """pix2pix/pix2pixHD PatchGAN: strided 4x4 convs to a map of real/fake logits."""

    def __init__(
        self,
        in_channels: int = 3,  # image channels (more when conditioning maps are concatenated)
        base_channels: int = 64,  # width of the first conv; doubles per layer up to max_channels
        num_layers: int = 3,  # strided layers after the first (receptive field grows with each)
        max_channels: int = 512,  # width cap
        norm: str = "instance",  # "instance", "batch" or "none"
    ) -> None:
        super().__init__()
        norms = {"instance": lambda c: nn.InstanceNorm2d(c, affine=True), "batch": nn.BatchNorm2d,
                 "none": lambda c: nn.Identity()}
        if norm not in norms:
            raise ValueError(f"discriminator norm must be one of {sorted(norms)}, got {norm!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 2), nn.LeakyReLU(0.2, True)]
        ch = base_channels
        for i in range(1, num_layers + 1):
            out = min(base_channels * 2**i, max_channels)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 2), norms[norm](out), nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 2))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """pix2pixHD multi-scale discriminator: the same PatchGAN design on 1x, 1/2x, 1/4x ... of the input.

    Returns one logit map per scale (a list), the form every adversarial loss in `swaplab.losses` takes.
    """

    def __init__(self, num_scales: int = 3, **patch_kwargs) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.scales = nn.ModuleList(PatchDiscriminator(**patch_kwargs) for _ in range(num_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for i, disc in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            logits.append(disc(x))
        return logits


class ResNetDiscriminator(nn.Module):
    """StarGAN-v2-style discriminator (HifiFace): conv3x3, down-sampling residual blocks without normalization
    to 4x4, LeakyReLU, conv4x4 to 1x1, LeakyReLU, 1x1 conv to one real/fake logit per image (B x 1)."""

    def __init__(
        self,
        resolution: int = 256,  # input side (power of two >= 8); log2(resolution) - 2 down blocks
        base_channels: int = 64,  # width of the first conv; doubles per block (StarGAN v2: 2**14 // resolution)
        max_channels: int = 512,  # width cap
        in_channels: int = 3,  # image channels
    ) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        self.resolution = resolution
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 3, 1, 1)]
        ch = base_channels
        for _ in range(resolution.bit_length() - 3):  # log2(resolution) - 2 halvings: down to 4x4
            out = min(ch * 2, max_channels)
            layers.append(ResBlock(ch, out, resample="down", norm="none"))
            ch = out
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 4, 1, 0), nn.LeakyReLU(0.2), nn.Conv2d(ch, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"ResNetDiscriminator built for {self.resolution}px, got {tuple(x.shape)}")
        return self.model(x).flatten(1)
