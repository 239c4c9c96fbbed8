"""Pre-activation residual blocks with optional resampling, and their AdaIN-conditioned form.

Used by HifiFace (encoder / decoder / SFF, Wang et al. 2021, Fig. 12) and the StarGAN-v2-style
discriminator: norm -> LeakyReLU(0.2) -> conv3x3 -> resample -> norm -> LeakyReLU -> conv3x3, plus a
shortcut (1x1 conv when the width changes, same resampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESAMPLE = ("none", "down", "up")


def resample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Average-pool by 2 ("down"), bilinear upsample by 2 ("up") or identity ("none")."""
    if mode == "down":
        return F.avg_pool2d(x, 2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return x


def _check_resample(mode: str) -> str:
    if mode not in RESAMPLE:
        raise ValueError(f"resample must be one of {RESAMPLE}, got {mode!r}")
    return mode


class ResBlock(nn.Module):
    """Residual block; `norm` "instance" (HifiFace encoder) or "none" (discriminator)."""

    def __init__(
        self,
        in_channels: int,  # input width
        out_channels: int,  # output width (1x1 shortcut conv when different)
        resample: str = "none",  # "none", "down" (avg-pool 2) or "up" (bilinear 2x), between the two convs
        norm: str = "instance",  # "instance" (affine) or "none"
    ) -> None:
        super().__init__()
        norms = {"instance": lambda c: nn.InstanceNorm2d(c, affine=True), "none": lambda c: nn.Identity()}
        if norm not in norms:
            raise ValueError(f"ResBlock norm must be one of {sorted(norms)}, got {norm!r}")
        self.resample = _check_resample(resample)
        self.norm1, self.norm2 = norms[norm](in_channels), norms[norm](out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = resample(self.conv1(F.leaky_relu(self.norm1(x), 0.2)), self.resample)
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return h + resample(self.shortcut(x), self.resample)


class AdaIN(nn.Module):
    """Adaptive instance normalization: gamma(s) * IN(x) + beta(s) for a style vector s."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.gamma = nn.Linear(style_dim, channels)
        self.beta = nn.Linear(style_dim, channels)
        nn.init.zeros_(self.gamma.weight)  # start as plain instance norm: gamma = 1, beta = 0
        nn.init.ones_(self.gamma.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.gamma(style)[..., None, None] * self.norm(x) + self.beta(style)[..., None, None]


class AdaINResBlock(nn.Module):
    """`ResBlock` with both normalizations replaced by AdaIN on a style vector (HifiFace decoder)."""

    def __init__(
        self,
        in_channels: int,  # input width
        out_channels: int,  # output width
        style_dim: int,  # length of the conditioning vector (HifiFace: v_sid, 257 + 512)
        resample: str = "none",  # "none" or "up" (bilinear 2x); "down" also works
    ) -> None:
        super().__init__()
        self.resample = _check_resample(resample)
        self.adain1, self.adain2 = AdaIN(in_channels, style_dim), AdaIN(out_channels, style_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        h = resample(self.conv1(F.leaky_relu(self.adain1(x, style), 0.2)), self.resample)
        h = self.conv2(F.leaky_relu(self.adain2(h, style), 0.2))
        return h + resample(self.shortcut(x), self.resample)
