"""Face parsing: the BiSeNet of zllrunning/face-parsing.PyTorch (same module and key names as the published
`79999_iter.pth`, so the official file loads strictly) and the parsing expert that turns its 19 CelebAMask-HQ
classes into named region masks (face / hair / background by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from swaplab.experts.base import FrozenExpert, imagenet_normalize
from swaplab.experts.registry import WeightEntry, load_pretrained, register_weights, seeded
from swaplab.faces.crop import check_box, crop_box
from swaplab.faces.parsing import CELEBAMASK_CLASSES, DEFAULT_GROUPS, group_matrix

register_weights(WeightEntry(
    key="bisenet_79999_iter",
    filename="79999_iter.pth",
    source="github.com/zllrunning/face-parsing.PyTorch (README: 'our pre-trained model', Google Drive "
           "id 154JgKpzCPW82qINcVieuPH3fZ2e0P812)",
    format="torch state_dict of BiSeNet with 19 CelebAMask-HQ classes (keys cp.resnet.*, cp.arm16.*, ffm.*, "
           "conv_out*.*), 512x512 RGB ImageNet-normalised input",
))


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinementModule(nn.Module):
    """3x3 ConvBNReLU whose output is re-weighted per channel by a global-pooled sigmoid attention."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))


class ResNet18Features(ResNet):
    """torchvision's ResNet-18 without its classifier (the official Resnet18 has the same key names and
    the same maths); returns the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2])
        del self.fc, self.avgpool

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class ContextPath(nn.Module):
    """ResNet-18 features refined top-down (global context + ARMs), nearest-upsampled to 1/8."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(feat32.mean((2, 3), keepdim=True))  # broadcast == nearest upsampling of 1x1
        up32 = F.interpolate(self.arm32(feat32) + context, size=feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16), up32


class FeatureFusionModule(nn.Module):
    """Fuses the spatial (ResNet 1/8) and context features with a squeeze-excitation style attention."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, kernel=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat + feat * atten


class BiSeNetOutput(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier (no bias)."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet face parser; widths are fixed by the official checkpoint, only the input size can change."""

    def __init__(
        self,
        num_classes: int = 19,  # CelebAMask-HQ classes (CELEBAMASK_CLASSES)
        input_size: int = 512,  # square side the expert resizes crops to (512 for the official model)
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_classes = num_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, num_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, num_classes)  # auxiliary training heads: loaded, not run
        self.conv_out32 = BiSeNetOutput(128, 64, num_classes)

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        """Main-head logits, B x num_classes x size (default: the input's size), bilinear with
        align_corners=True as in the official model."""
        feat8, context8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, size=tuple(size or x.shape[2:]), mode="bilinear", align_corners=True)


class ParsingRegions:
    """Labels and named region masks from a parser's B x 19 x S x S class logits (`__call__`) and its
    `class_to_group` (19 x G) / `group_names`: shared by FaceParser and the landmark-hull stand-in."""

    class_to_group: torch.Tensor
    group_names: Sequence[str]

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Hard class labels B x S x S (int64, CELEBAMASK_CLASSES indices)."""
        return self(images).argmax(1)

    def group_masks(self, logits: torch.Tensor, hard: bool = False) -> torch.Tensor:
        """B x G x H x W group masks from class logits: summed softmax probabilities (soft), or the one-hot
        of the arg-max class (hard). Either way they sum to 1 at every pixel."""
        if hard:
            probs = F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        else:
            probs = logits.float().softmax(1).to(logits.dtype)
        return torch.einsum("bchw,gc->bghw", probs, self.class_to_group.to(probs.dtype))

    def masks(self, images: torch.Tensor, hard: bool = False) -> dict[str, torch.Tensor]:
        """Named region masks {group: B x 1 x S x S} in [0, 1]; differentiable when soft."""
        masks = self.group_masks(self(images), hard=hard)
        return {name: masks[:, g : g + 1] for g, name in enumerate(self.group_names)}

    def group_labels(self, images: torch.Tensor) -> torch.Tensor:
        """Region labels B x S x S (int64, index into `group_names`; default 0 background, 1 face, 2 hair)."""
        return self.class_to_group.argmax(0)[self.labels(images)]


class FaceParser(ParsingRegions, FrozenExpert):
    """Per-pixel face parsing of aligned crops, and region masks built from class groups.

    Input: aligned crops B x 3 x S x S, RGB in [-1, 1]. `crop` = (lo, hi) is the square box, in fractions of
    the side, that is parsed: it is cut out, resized to the net's input size (512 officially), ImageNet-
    normalised, and the logits come back at the box's size in the crop's pixel grid; pixels outside the box
    are background. The default (0, 1) parses the whole crop (BiSeNet was trained on loose CelebA-HQ faces,
    so the whole FaceShifter/FFHQ-style crop is the closest framing).

    `groups` maps region names to CelebAMask-HQ class names (or indices); see DEFAULT_GROUPS (background /
    face / hair, in that order: 3-class labels for FSGAN-style segmentation; `masks()["face"]` for HifiFace
    and blending). Classes in no group join `rest`.
    """

    spatial_output = True  # logits are maps over the input crop (see Experts.set_input_template)

    def __init__(self, net: BiSeNet, name: str = "bisenet", weights: str = "random",
                 crop: Sequence[float] = (0.0, 1.0), groups: Mapping[str, Sequence[str | int]] | None = None,
                 rest: str | None = "background") -> None:
        super().__init__(net, name=name, weights=weights)
        if len(check_box(crop)) != 2:
            raise ValueError(f"the parser's crop must be a square box (lo, hi): labels are pasted back, got {crop}")
        self.crop = (float(crop[0]), float(crop[1]))
        groups = DEFAULT_GROUPS if groups is None else {str(k): list(v) for k, v in groups.items()}
        self.group_names, matrix = group_matrix(groups, rest)
        self.register_buffer("class_to_group", matrix, persistent=False)  # G x C; moves with the expert

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits B x 19 x S x S (CELEBAMASK_CLASSES order)."""
        side = images.shape[-1]
        lo, hi = round(self.crop[0] * side), round(self.crop[1] * side)
        faces = imagenet_normalize(crop_box(images, self.crop, self.net.input_size))
        logits = self.net(faces, size=(hi - lo, hi - lo))
        if (lo, hi) == (0, side):
            return logits
        pad = (lo, side - hi, lo, side - hi)
        outside = F.pad(torch.zeros_like(logits[:, :1]), pad, value=1.0)
        not_background = torch.full_like(logits[:1, :, :1, :1], -1e4)
        not_background[:, 0] = 0
        return F.pad(logits, pad) + outside * not_background  # outside the box: certainly background

    @classmethod
    def build(cls, weights: str = "random", path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "bisenet_79999_iter", seed: int = 0, input_size: int = 512,
              **kwargs) -> FaceParser:
        """`weights="random"` (seeded) for tests and the quickstart, `"pretrained"` for `79999_iter.pth`.
        kwargs: name, crop, groups, rest."""
        with seeded(seed):
            net = BiSeNet(num_classes=len(CELEBAMASK_CLASSES), input_size=input_size)
        source = load_pretrained(net, weights, registry_key, path=path, weights_dir=weights_dir)
        return cls(net, weights=source, **kwargs)
