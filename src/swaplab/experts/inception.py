"""FID's Inception-v3 (the TensorFlow `inception-2015-12-05` graph as ported to PyTorch by pytorch-fid) and the
expert that turns face crops into its 2048-D pool features.

The FID network differs from torchvision's Inception-v3 in its pooling: the average pools of the Mixed blocks
exclude the padding from the mean, and the last block (Mixed_7c) max-pools its pool branch. The published file
`pt_inception-2015-12-05-6726825d.pth` is a state dict of torchvision's `Inception3` (1008 classes, no auxiliary
head) with these blocks; it loads strictly into `FIDInceptionV3`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from swaplab.experts.base import FrozenExpert
from swaplab.experts.registry import WeightEntry, load_pretrained, register_weights, seeded

FEATURES = 2048  # pool3 features

register_weights(WeightEntry(
    key="fid_inception_v3",
    filename="pt_inception-2015-12-05-6726825d.pth",
    source="github.com/mseitzer/pytorch-fid releases (fid_weights): "
           "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    format="torch state_dict of torchvision Inception3 (1008 classes, no aux head) with FID pooling, converted "
           "from TensorFlow's inception-2015-12-05; 299x299 RGB input in [-1, 1]",
))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(InceptionA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class FIDInceptionC(InceptionC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class FIDInceptionE(InceptionE):
    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool  # Mixed_7c max-pools its pool branch; Mixed_7b averages without padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(Inception3):
    """torchvision `Inception3` (1008 classes, no aux head) with FID's Mixed blocks; `forward` returns the
    B x 2048 pool features of B x 3 x S x S inputs in [-1, 1] (S = 299 for the published statistics)."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's note about init_weights
            super().__init__(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        stages = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                  "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                  "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")
        for name in stages:
            x = getattr(self, name)(x)
        return x.flatten(1)


class InceptionFeatures(FrozenExpert):
    """FID features: canonical crops (B x 3 x S x S RGB in [-1, 1]) resized bilinearly to `input_size` (as
    pytorch-fid does) -> B x 2048 float32."""

    def __init__(self, net: FIDInceptionV3, name: str = "fid_inception_v3", weights: str = "random",
                 input_size: int = 299) -> None:
        super().__init__(net, name=name, weights=weights)
        self.input_size = int(input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net(x)

    @classmethod
    def build(cls, weights: str = "pretrained", path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "fid_inception_v3", input_size: int = 299, seed: int = 0) -> InceptionFeatures:
        """`weights="pretrained"`: the published file (a missing file raises MissingWeightsError naming it and
        where to get it); `"random"`: seeded, for tests only. `input_size` below 299 is for tests only (>= 75)."""
        with seeded(seed):
            net = FIDInceptionV3()
        source = load_pretrained(net, weights, registry_key, path=path, weights_dir=weights_dir)
        return cls(net, weights=source, input_size=input_size)
