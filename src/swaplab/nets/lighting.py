"""Fast Face-swap's lighting network (Korshunova et al. 2017) and the light-loss expert around it.

What the paper write-ups give (seeds 000 and 004): VGG features do not keep the content image's
illumination, so a small *siamese* CNN (Chopra, Hadsell & LeCun 2005) is trained to tell pairs of images
with equal or different lighting; pairs always have equal pose; training data is Extended Yale B
(grayscale portraits, 9 poses x 64 illuminations); the objective maximises the distance for different
lighting and minimises it for equal lighting; the distance is the L2 norm in the feature space of the
fully connected layer; Gamma(x) is the representation in the *last* layer of the network; both images
of the light loss are single-channel luminance images; L_light(x_hat, x) = 1/|Gamma(x)| *
||Gamma(x_hat) - Gamma(x)||_2^2 (beta = 1e-22 in the poster's figure). The architecture itself is the
paper's Figure 4, which the write-ups do not reproduce; per the project brief it takes 128x128 grayscale
input through convolutions and max pooling, then fully connected layers. No official code or weights
are public.

Our choices where they are silent: stages of 3x3 conv (padding 1) + ReLU + 2x2 max pooling, widths
(16, 32, 64, 128, 128) (128 -> 4x4), then FC 256 + ReLU and FC 128 (= Gamma, no activation); no
normalisation layers; grayscale = ITU-R BT.601 luma of the [-1, 1] RGB input (cv2's weights), kept in
[-1, 1]; the contrastive loss with a margin (swaplab.models.lighting). As no official file exists,
"pretrained" means a net trained and exported with swaplab (registry key "lighting_net").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.cvtColor(RGB2GRAY)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [-1, 1] -> B x 1 x H x W luma in [-1, 1]; 1-channel input passes through."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {tuple(images.shape)}")
    w = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


class LightingNet(nn.Module):
    """Siamese branch: conv/ReLU/max-pool stages, then fully connected layers; returns Gamma (B, fc_dims[-1])."""

    def __init__(
        self,
        in_channels: int = 1,  # grayscale (paper)
        input_size: int = 128,  # square input side (paper: 128); divisible by 2 ** len(widths)
        widths: Sequence[int] = (16, 32, 64, 128, 128),  # conv channels per stage, each followed by 2x2 pooling
        fc_dims: Sequence[int] = (256, 128),  # fully connected sizes; the last one is Gamma
    ) -> None:
        super().__init__()
        widths, fc_dims = tuple(int(w) for w in widths), tuple(int(d) for d in fc_dims)
        if not widths or not fc_dims or input_size % (1 << len(widths)):
            raise ValueError(f"input_size {input_size} must be divisible by 2**{len(widths)} (one pool per stage)")
        self.in_channels, self.input_size, self.widths, self.fc_dims = in_channels, input_size, widths, fc_dims
        layers: list[nn.Module] = []
        ch = in_channels
        for w in widths:
            layers += [nn.Conv2d(ch, w, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            ch = w
        self.features = nn.Sequential(*layers)
        side = input_size >> len(widths)
        fc: list[nn.Module] = []
        dim = ch * side * side
        for i, d in enumerate(fc_dims):
            fc += [nn.Linear(dim, d)] + ([nn.ReLU(inplace=True)] if i < len(fc_dims) - 1 else [])
            dim = d
        self.fc = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))

    @staticmethod
    def config_from_state_dict(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The constructor arguments that produced `state` (read from the weight shapes)."""
        def weights(prefix: str, ndim: int) -> list[torch.Tensor]:
            keys = [k for k in state if k.startswith(prefix) and k.endswith(".weight") and state[k].dim() == ndim]
            return [state[k] for k in sorted(keys, key=lambda k: int(k.split(".")[1]))]

        convs, linears = weights("features.", 4), weights("fc.", 2)
        if not convs or not linears:
            raise ValueError("not a LightingNet state dict (no features.*/fc.* weights)")
        side = math.isqrt(linears[0].shape[1] // convs[-1].shape[0])
        return {"in_channels": convs[0].shape[1], "input_size": side << len(convs),
                "widths": [c.shape[0] for c in convs], "fc_dims": [f.shape[0] for f in linears]}
