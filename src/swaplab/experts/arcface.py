"""ArcFace identity encoder: the IResNet of InsightFace arcface_torch (same module and key names as the
published `backbone.pth`, so official checkpoints load as they are) and the identity expert around it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.experts.base import FrozenExpert
from swaplab.experts.registry import load_tensors, resolve_weights

IRESNET_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN-conv-BN-PReLU-conv(stride)-BN (+ shortcut)."""

    def __init__(self, in_ch: int, ch: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch, eps=1e-5)
        self.prelu = nn.PReLU(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ch, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IResNet backbone; defaults reproduce arcface_torch (widths 64..512, 112x112 input, 512-D output)."""

    def __init__(
        self,
        depth: int = 100,  # 18 / 34 / 50 / 100 / 200 (arcface_torch layer counts)
        widths: Sequence[int] = (64, 128, 256, 512),  # stage widths; smaller only for tests
        input_size: int = 112,  # square input side (112 for the official checkpoints)
        embedding_size: int = 512,  # identity vector length
        layers: Sequence[int] | None = None,  # explicit blocks per stage, overrides depth
    ) -> None:
        super().__init__()
        layers = tuple(layers) if layers is not None else IRESNET_DEPTHS[depth]
        self.input_size = input_size
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        in_ch = widths[0]
        for i, (ch, n) in enumerate(zip(widths, layers, strict=True)):
            downsample = nn.Sequential(nn.Conv2d(in_ch, ch, 1, 2, bias=False), nn.BatchNorm2d(ch, eps=1e-5))
            blocks = [IBasicBlock(in_ch, ch, 2, downsample)] + [IBasicBlock(ch, ch) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = ch
        self.bn2 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        side = input_size
        for _ in layers:
            side = (side - 1) // 2 + 1  # each stage halves the side (3x3, stride 2, padding 1)
        self.fc = nn.Linear(in_ch * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class IdentityEncoder(FrozenExpert):
    """Unit-norm identity embeddings of aligned faces.

    Callers pass the training crop (RGB, [-1, 1], any square size). `crop` is the box, in fractions of the
    side, that holds the network's own 112-style alignment inside that crop: (19/256, 237/256) for the
    FaceShifter/ArcFace 256 crop (DESIGN.md §5); the box is cut and resized to the network's input size.
    """

    def __init__(self, net: IResNet, name: str = "arcface", weights: str = "random",
                 crop: Sequence[float] = (19 / 256, 237 / 256)) -> None:
        super().__init__(net, name=name, weights=weights)
        lo, hi = float(crop[0]), float(crop[1])
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"identity crop must satisfy 0 <= lo < hi <= 1, got {crop}")
        self.crop = (lo, hi)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        side = images.shape[-1]
        lo, hi = round(self.crop[0] * side), round(self.crop[1] * side)
        faces = images[..., lo:hi, lo:hi]
        size = self.net.input_size
        if faces.shape[-1] != size:
            faces = F.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(self.net(faces), dim=-1)

    @classmethod
    def build(cls, weights: str = "random", depth: int = 100, path: str | None = None,
              weights_dir: str | None = None, registry_key: str = "arcface_r100_ms1mv3", seed: int = 0,
              **kwargs) -> IdentityEncoder:
        """`weights="random"` (seeded: the same on every rank and every run) for tests and the quickstart,
        `"pretrained"` for the official file."""
        net_kwargs = {k: kwargs.pop(k) for k in ("widths", "input_size", "embedding_size", "layers") if k in kwargs}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = IResNet(depth=depth, **net_kwargs)
        if weights == "random":
            return cls(net, weights="random", **kwargs)
        if weights != "pretrained":
            raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
        file = resolve_weights(registry_key, path=path, weights_dir=weights_dir)
        net.load_state_dict(load_tensors(file), strict=True)
        return cls(net, weights=str(file), **kwargs)
