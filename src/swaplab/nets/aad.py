"""Adaptive Attentional Denormalization (FaceShifter, Li et al. 2019, Sec. 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AADLayer(nn.Module):
    """out = (1 - M) * A + M * I with A, I the attribute- and identity-denormalized activation."""

    def __init__(
        self,
        channels: int,  # channels of the activation h
        attr_channels: int,  # channels of the attribute map z_att^k at h's resolution
        id_dim: int,  # length of the identity vector z_id
        norm: str = "instance",  # how h is normalized: "instance" or "batch"
    ) -> None:
        super().__init__()
        norms = {"instance": nn.InstanceNorm2d, "batch": nn.BatchNorm2d}
        if norm not in norms:
            raise ValueError(f"AAD norm must be one of {sorted(norms)}, got {norm!r}")
        self.norm = norms[norm](channels, affine=False)
        self.attr_gamma = nn.Conv2d(attr_channels, channels, 1)
        self.attr_beta = nn.Conv2d(attr_channels, channels, 1)
        self.id_gamma = nn.Linear(id_dim, channels)
        self.id_beta = nn.Linear(id_dim, channels)
        self.mask = nn.Conv2d(channels, 1, 1)

    def forward(self, h: torch.Tensor, z_att: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        attr = self.attr_gamma(z_att) * h + self.attr_beta(z_att)
        ident = self.id_gamma(z_id)[..., None, None] * h + self.id_beta(z_id)[..., None, None]
        mask = torch.sigmoid(self.mask(h))
        return (1 - mask) * attr + mask * ident


class AADResBlock(nn.Module):
    """Two AAD-ReLU-Conv3x3 units with a residual path (an extra AAD unit when channels change)."""

    def __init__(self, in_channels: int, out_channels: int, attr_channels: int, id_dim: int,
                 norm: str = "instance") -> None:
        super().__init__()
        self.aad1 = AADLayer(in_channels, attr_channels, id_dim, norm)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.aad2 = AADLayer(in_channels, attr_channels, id_dim, norm)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut_aad = AADLayer(in_channels, attr_channels, id_dim, norm)
            self.shortcut = nn.Conv2d(in_channels, out_channels, 3, 1, 1)

    def forward(self, h: torch.Tensor, z_att: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.aad1(h, z_att, z_id)))
        out = self.conv2(F.relu(self.aad2(out, z_att, z_id)))
        skip = h if self.shortcut is None else self.shortcut(F.relu(self.shortcut_aad(h, z_att, z_id)))
        return out + skip
