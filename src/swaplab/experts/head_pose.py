"""Head pose: Hopenet of natanielruiz/deep-head-pose (a torchvision ResNet-50 with three 66-bin angle heads;
same key names as the published `hopenet_robust_alpha1.pkl`) and the head-pose expert around it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from swaplab.experts.base import FrozenExpert, imagenet_normalize
from swaplab.experts.registry import WeightEntry, load_pretrained, register_weights, seeded
from swaplab.faces.crop import check_box, crop_box

NUM_BINS = 66  # 3-degree bins; bin i covers [3i - 99, 3i - 96)
BIN_WIDTH = 3.0  # degrees per bin
BIN_OFFSET = -99.0  # angle of bin 0 in degrees

register_weights(WeightEntry(
    key="hopenet_robust_alpha1",
    filename="hopenet_robust_alpha1.pkl",
    source="github.com/natanielruiz/deep-head-pose (README: '300W-LP, alpha 1, robust to image quality', "
           "Google Drive id 1m25PrSE7g9D2q2XJVMR6IA7RaCvWSzCR)",
    format="torch state_dict of Hopenet (torchvision ResNet-50 keys without fc, fc_yaw/fc_pitch/fc_roll "
           "Linear(2048, 66), vestigial fc_finetune Linear(2051, 3)), 224x224 RGB ImageNet-normalised input",
))


def angles_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Hopenet's continuous angles: the softmax expectation of the bin index, times 3, minus 99 degrees.

    logits: ... x NUM_BINS -> ... degrees (in [-99, 96]); differentiable."""
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    probs = logits.float().softmax(-1)
    return ((probs * bins).sum(-1) * BIN_WIDTH + BIN_OFFSET).to(logits.dtype)


class Hopenet(ResNet):
    """torchvision ResNet-50 (same keys and maths as the official Bottleneck layout) without `fc`, with
    yaw / pitch / roll bin classifiers on the pooled 2048-D feature."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),  # Bottleneck blocks per stage (ResNet-50); fewer only for tests
        num_bins: int = NUM_BINS,  # angle bins per head
        input_size: int = 224,  # square side the expert resizes crops to (224 for the official model)
    ) -> None:
        super().__init__(Bottleneck, list(layers))
        del self.fc
        features = 512 * Bottleneck.expansion
        self.input_size = input_size
        self.fc_yaw = nn.Linear(features, num_bins)
        self.fc_pitch = nn.Linear(features, num_bins)
        self.fc_roll = nn.Linear(features, num_bins)
        self.fc_finetune = nn.Linear(features + 3, 3)  # unused by the official forward; kept to load strictly

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Bin logits B x 3 x num_bins in (yaw, pitch, roll) order. Adaptive pooling equals the official
        AvgPool2d(7) at 224 px and generalises to other sizes."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return torch.stack([self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)], dim=1)


class HeadPose(FrozenExpert):
    """Head pose (yaw, pitch, roll) in degrees, Hopenet's 300W-LP Euler-angle convention.

    Input: aligned crops B x 3 x S x S, RGB in [-1, 1]. `crop` = (lo, hi) is the box, in fractions of the
    side, handed to the net; it is cut, resized to 224 and ImageNet-normalised. Hopenet was trained on loose
    300W-LP crops (landmark box grown 21% left/right/bottom and 70% upwards, i.e. forehead and some hair),
    which the whole FaceShifter/FFHQ-style 256 crop approximates, hence the default (0, 1).
    """

    def __init__(self, net: Hopenet, name: str = "hopenet", weights: str = "random",
                 crop: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__(net, name=name, weights=weights)
        self.crop = check_box(crop)

    def bin_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Raw bin logits B x 3 x 66 (yaw, pitch, roll)."""
        return self.net(imagenet_normalize(crop_box(images, self.crop, self.net.input_size)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 angles (yaw, pitch, roll) in degrees, each in [-99, 96]."""
        return angles_from_logits(self.bin_logits(images))

    @classmethod
    def build(cls, weights: str = "random", path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "hopenet_robust_alpha1", seed: int = 0, layers: Sequence[int] = (3, 4, 6, 3),
              input_size: int = 224, **kwargs) -> HeadPose:
        """`weights="random"` (seeded) for tests and the quickstart, `"pretrained"` for the official file.
        kwargs: name, crop."""
        with seeded(seed):
            net = Hopenet(layers=tuple(layers), input_size=input_size)
        source = load_pretrained(net, weights, registry_key, path=path, weights_dir=weights_dir)
        return cls(net, weights=source, **kwargs)
