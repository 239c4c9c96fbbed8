"""HEAR-Net of FaceShifter: a U-Net that refines the AEI-Net swap Y^_st given the heuristic error.

Y_st = HEAR(Y^_st, dY_t) with dY_t = X_t - AEI(X_t, X_t): where AEI-Net cannot even reconstruct its own
target (occlusions it dropped: glasses, hands, hair), the error shows what to put back. The U-Net is the paper's
and public code's (taotaonice/FaceShifter network/HEAR_Net.py): five strided 4x4 down-samplings (256 -> 8x8),
transposed-conv up-samplings with skips, a bilinear 2x up-sampling and a 3x3 conv (swaplab.nets.unet.StridedUNet).
The public code ends the U-Net in tanh and predicts the image directly (`output="direct"`); `output="residual"` (default)
predicts a correction in pre-tanh space instead, Y_st = tanh(atanh(Y^_st) + U(Y^_st, dY_t)), with the last
conv zero-initialized: the refined image stays in (-1, 1), starts equal to the AEI result (L_chg = 0), and
"no error -> no change" is the zero map rather than an identity the U-Net must learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from swaplab.nets.unet import StridedUNet

_ATANH_LIMIT = 1 - 1e-3  # AEI outputs are tanh values; keep atanh finite (|pre-activation| <= 3.8)


class HEARNet(nn.Module):
    """`forward(swap, heuristic_error) -> refined swap`, all (B,3,H,W) in [-1, 1] (the error in [-2, 2])."""

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512, 512),  # channels after each down-sampling (public: these five)
        norm: str = "batch",                              # "batch" (public code), "instance", "none"
        output: str = "residual",                         # "residual" (pre-tanh correction) or "direct" (tanh)
    ) -> None:
        super().__init__()
        if output not in ("residual", "direct"):
            raise ValueError(f"output must be 'residual' or 'direct', got {output!r}")
        self.output = output
        self.unet = StridedUNet(in_channels=6, out_channels=3, widths=widths, norm=norm)
        if output == "residual":
            nn.init.zeros_(self.unet.head.weight)
            nn.init.zeros_(self.unet.head.bias)

    def forward(self, swap: torch.Tensor, heuristic_error: torch.Tensor) -> torch.Tensor:
        correction = self.unet(torch.cat([swap, heuristic_error], dim=1))
        if self.output == "direct":
            return torch.tanh(correction)
        return torch.tanh(torch.atanh(swap.clamp(-_ATANH_LIMIT, _ATANH_LIMIT)) + correction)
