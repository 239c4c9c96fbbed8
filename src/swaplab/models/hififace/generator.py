"""HifiFace generator (Wang et al. 2021): encoder res-blocks, AdaIN decoder on the shape-aware identity v_sid,
and the Semantic Facial Fusion module (plain nn.Modules; the experts stay outside).

With base_channels 64 and max_channels 512 the widths are those of the paper's Fig. 12 (and public code):
encoder 64 -> 128 -> 256 (z_enc, 1/4) -> 512 -> 512 -> 512 (1/32) + 2 res-blocks at 512; decoder 2 AdaIN
res-blocks at 512, then up to 512, 512, 256 (z_dec, 1/4); F_up 256 -> 64 -> 16 (4x) + refinement blocks.
Small inputs use fewer down-sampling steps so that the bottleneck stays at least 4x4.

The face network (encoder, decoder, SFF's fusion) works at `face_resolution`, the SFF at 1/4 of it; F_up
up-samples from there to `resolution`, where I_r is blended with the full-resolution target. The paper's Ours-512
(Sec. 4: 512 supervision, "another res-block in F_up of SFF compared to Ours-256") is face_resolution 256 and
resolution 512: F_up gains a third up-sampling res-block (64 -> 512, 8x). face_resolution = resolution = 512
runs the whole network at 512 instead (experiment=hififace_512_whole_network).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.nets.resblocks import AdaINResBlock, ResBlock


class HifiFaceResult(NamedTuple):
    """Outputs of one swap: images in [-1, 1], masks in [0, 1]."""

    swap: torch.Tensor  # I_r = M_r * I_out + (1 - M_r) * I_t, (B, 3, S, S)
    low: torch.Tensor  # I_low, (B, 3, F/4, F/4) with F the face network's side
    mask: torch.Tensor  # M_r, (B, 1, S, S)
    mask_low: torch.Tensor  # M_low, (B, 1, F/4, F/4)
    raw: torch.Tensor  # I_out before the image-level blend, (B, 3, S, S)


def encoder_widths(base_channels: int, max_channels: int, num_down: int) -> list[int]:
    """Output widths of the down-sampling encoder blocks (1/2, 1/4, ... of the input side)."""
    return [min(base_channels * 2 ** (k + 1), max_channels) for k in range(num_down)]


class Encoder(nn.Module):
    """conv3x3 + instance-norm res-blocks down to the bottleneck; also returns z_enc (the 1/4 features)."""

    def __init__(self, base_channels: int, max_channels: int, num_down: int, bottleneck_blocks: int) -> None:
        super().__init__()
        widths = encoder_widths(base_channels, max_channels, num_down)
        self.stem = nn.Conv2d(3, base_channels, 3, 1, 1)
        self.down = nn.ModuleList(ResBlock(i, o, "down") for i, o in zip([base_channels, *widths[:-1]], widths, strict=True))
        self.bottleneck = nn.Sequential(*(ResBlock(widths[-1], widths[-1]) for _ in range(bottleneck_blocks)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        z_enc = x
        for k, block in enumerate(self.down):
            x = block(x)
            if k == 1:
                z_enc = x
        return z_enc, self.bottleneck(x)


class Decoder(nn.Module):
    """AdaIN res-blocks on v_sid: bottleneck blocks, then up-sampling blocks back to 1/4 of the side."""

    def __init__(self, base_channels: int, max_channels: int, num_down: int, bottleneck_blocks: int,
                 style_dim: int) -> None:
        super().__init__()
        widths = encoder_widths(base_channels, max_channels, num_down)
        ch = widths[-1]
        blocks = [AdaINResBlock(ch, ch, style_dim) for _ in range(bottleneck_blocks)]
        for out in reversed(widths[1:-1]):  # mirror the encoder from 1/2^num_down up to 1/4
            blocks.append(AdaINResBlock(ch, out, style_dim, "up"))
            ch = out
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, v_sid: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, v_sid)
        return x


def upsampler_widths(channels: int, up_blocks: int) -> list[int]:
    """Widths of F_up's up-sampling blocks: channels / 4, / 16 (the paper's 256 -> 64 -> 16), then halving."""
    if up_blocks < 2:
        raise ValueError(f"F_up needs at least 2 up-sampling blocks (the SFF works at 1/4), got {up_blocks}")
    widths = [max(channels // 4, 4), max(channels // 16, 4)]
    for _ in range(up_blocks - 2):
        widths.append(max(widths[-1] // 2, 4))
    return widths


class SemanticFacialFusion(nn.Module):
    """SFF: M_low from z_dec, z_fuse = M_low * z_dec + (1 - M_low) * resblock(z_enc), an AdaIN res-block,
    I_low, the 4x up-sampler F_up, the learned mask M_r and I_r = M_r * I_out + (1 - M_r) * I_t."""

    def __init__(self, channels: int, style_dim: int, refine_blocks: int = 1, up_blocks: int = 2) -> None:
        super().__init__()
        self.encoder_block = ResBlock(channels, channels)  # sigma(z_enc)
        self.mask_low = ResBlock(channels, 1)
        self.fuse_block = AdaINResBlock(channels, channels, style_dim)
        self.to_low = nn.Conv2d(channels, 3, 3, 1, 1)
        widths = upsampler_widths(channels, up_blocks)
        self.upsampler = nn.Sequential(  # F_up: 2x up-sampling res-blocks, then refinement res-blocks
            *(ResBlock(i, o, "up") for i, o in zip([channels, *widths[:-1]], widths, strict=True)),
            *(ResBlock(widths[-1], widths[-1]) for _ in range(refine_blocks)),
        )
        self.to_out = nn.Conv2d(widths[-1], 4, 3, 1, 1)  # I_out (3) and M_r (1)

    def forward(self, z_enc: torch.Tensor, z_dec: torch.Tensor, v_sid: torch.Tensor,
                target: torch.Tensor) -> HifiFaceResult:
        mask_low = torch.sigmoid(self.mask_low(z_dec))
        z_fuse = mask_low * z_dec + (1 - mask_low) * self.encoder_block(z_enc)
        z_fuse = self.fuse_block(z_fuse, v_sid)
        low = torch.tanh(self.to_low(z_fuse))
        out = self.to_out(self.upsampler(z_fuse))
        raw, mask = torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:])
        return HifiFaceResult(mask * raw + (1 - mask) * target, low, mask, mask_low, raw)


class HifiFaceGenerator(nn.Module):
    """I_t and v_sid -> `HifiFaceResult`; v_sid = concat(c_fuse (257), v_id) is built by the caller."""

    def __init__(
        self,
        resolution: int = 256,  # output (= target and supervision) side, a power of two >= 16
        face_resolution: int | None = None,  # side the face network works at (None: resolution; paper 512: 256)
        base_channels: int = 64,  # stem width; encoder blocks double it up to max_channels
        max_channels: int = 512,  # width cap (paper: 512)
        num_down: int = 5,  # encoder down-sampling blocks (paper: 5); fewer when the side is small
        bottleneck_blocks: int = 2,  # res-blocks at the bottleneck, in the encoder and in the decoder
        refine_blocks: int = 1,  # non-up-sampling res-blocks in F_up (paper: one more at 512)
        id_dim: int = 512,  # ArcFace embedding length
        coeff_dim: int = 257,  # 3DMM coefficient length of c_fuse
    ) -> None:
        super().__init__()
        if resolution < 16 or 2 ** round(math.log2(resolution)) != resolution:
            raise ValueError(f"resolution must be a power of two >= 16, got {resolution}")
        face = resolution if face_resolution is None else face_resolution
        if face < 16 or face > resolution or 2 ** round(math.log2(face)) != face:
            raise ValueError(f"face_resolution must be a power of two in [16, resolution={resolution}], got {face}")
        num_down = min(num_down, int(math.log2(face)) - 2)  # keep the bottleneck >= 4x4
        if num_down < 2:
            raise ValueError(f"num_down must be >= 2 (z_enc is taken at 1/4), got {num_down}")
        self.resolution, self.face_resolution, self.style_dim = resolution, face, id_dim + coeff_dim
        self.encoder = Encoder(base_channels, max_channels, num_down, bottleneck_blocks)
        self.decoder = Decoder(base_channels, max_channels, num_down, bottleneck_blocks, self.style_dim)
        up_blocks = 2 + int(math.log2(resolution // face))  # 1/4 of the face side -> resolution
        self.sff = SemanticFacialFusion(encoder_widths(base_channels, max_channels, num_down)[1], self.style_dim,
                                        refine_blocks, up_blocks)

    def forward(self, target: torch.Tensor, v_sid: torch.Tensor) -> HifiFaceResult:
        if target.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"HifiFaceGenerator built for {self.resolution}px, got {tuple(target.shape)}")
        if v_sid.shape[-1] != self.style_dim:
            raise ValueError(f"v_sid must have {self.style_dim} values, got {v_sid.shape[-1]}")
        z_enc, bottleneck = self.encoder(resize(target, self.face_resolution))
        return self.sff(z_enc, self.decoder(bottleneck, v_sid), v_sid, target)


def resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking), R(.) of the paper's losses."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if images.shape[-2:] == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                         antialias=size[0] < images.shape[-2])
