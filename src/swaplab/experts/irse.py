"""IR-SE backbone of TreB1eN/InsightFace_Pytorch (`Backbone(50, drop_ratio, 'ir_se')`), the identity network
behind `model_ir_se50.pth` that FaceShifter re-implementations, HifiFace, ReliableSwap, pSp and e4e use.

Module and key names follow the official file, so it loads as it is:
`input_layer.{0 conv, 1 bn, 2 prelu}`, `body.N.shortcut_layer.{0 conv, 1 bn}` (absent where the block keeps
its width: a parameter-free strided 1x1 max-pool), `body.N.res_layer.{0 bn, 1 conv, 2 prelu, 3 conv, 4 bn,
5.fc1, 5.fc2}`, `output_layer.{0 bn2d, 3 linear, 4 bn1d}` (1 dropout and 2 flatten hold no tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from swaplab.experts.registry import WeightEntry, register_weights

IRSE_DEPTHS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}

register_weights(WeightEntry(
    key="ir_se50_treb1en",
    filename="model_ir_se50.pth",
    source="TreB1eN/InsightFace_Pytorch README, 'IR-SE50 @ Onedrive' (https://1drv.ms/u/s!AhMqVPD44cDOhkPsOU2S_HFpY9dC)"
           " or BaiduNetdisk; the same file is pSp/e4e's 'IR-SE50 Model' (github.com/eladrich/pixel2style2pixel)",
    format="torch state_dict of TreB1eN Backbone(50, 0.6, 'ir_se') (input_layer/body/output_layer keys), "
           "112x112 RGB input in [-1, 1], 512-D output",
))


class SEModule(nn.Module):
    """Squeeze-and-excitation gate with 1x1 convolutions (no biases), as in the official file."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)  # 1 only for the tiny test widths (< 16 channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class IRBlock(nn.Module):
    """Residual unit: BN-conv-PReLU-conv(stride)-BN(-SE) plus a (max-pool or conv+BN) shortcut."""

    def __init__(self, in_ch: int, ch: int, stride: int, se: bool = True) -> None:
        super().__init__()
        if in_ch == ch:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)  # subsampling only
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, ch, 1, stride, bias=False), nn.BatchNorm2d(ch))
        layers = [nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, ch, 3, 1, 1, bias=False), nn.PReLU(ch),
                  nn.Conv2d(ch, ch, 3, stride, 1, bias=False), nn.BatchNorm2d(ch)]
        self.res_layer = nn.Sequential(*layers, *([SEModule(ch)] if se else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE(nn.Module):
    """IR(-SE) backbone; defaults reproduce TreB1eN's IR-SE50 (widths 64..512, 112x112 input, 512-D output).

    Returns the raw embedding (the official `Backbone.forward` l2-normalises it; the identity expert does)."""

    def __init__(
        self,
        num_layers: int = 50,  # 50 / 100 / 152 (TreB1eN get_blocks); `layers` overrides
        widths: Sequence[int] = (64, 128, 256, 512),  # stage widths (stem = widths[0]); smaller only for tests
        input_size: int = 112,  # square input side (112 for the official file)
        embedding_size: int = 512,  # identity vector length
        layers: Sequence[int] | None = None,  # explicit blocks per stage, e.g. (1, 1, 1, 1) for tests
        se: bool = True,  # squeeze-excitation units ('ir_se'); False gives the plain 'ir' variant
        affine: bool = True,  # learnable final BatchNorm1d (False in e4e/pSp's IR_50 / IR_SE_50 helpers)
    ) -> None:
        super().__init__()
        layers = tuple(layers) if layers is not None else IRSE_DEPTHS[num_layers]
        self.input_size = input_size
        self.input_layer = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                         nn.PReLU(widths[0]))
        blocks, in_ch, side = [], widths[0], input_size
        for ch, n in zip(widths, layers, strict=True):
            blocks += [IRBlock(in_ch, ch, 2, se)] + [IRBlock(ch, ch, 1, se) for _ in range(n - 1)]
            in_ch, side = ch, (side - 1) // 2 + 1  # each stage halves the side (stride 2, padding 1)
        self.body = nn.Sequential(*blocks)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.Dropout(0.0), nn.Flatten(),  # dropout is inactive in eval anyway
            nn.Linear(in_ch * side * side, embedding_size), nn.BatchNorm1d(embedding_size, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))
