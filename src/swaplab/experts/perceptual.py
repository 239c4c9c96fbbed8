"""Perceptual experts: VGG feature maps (torchvision's ImageNet VGG16/19, FSGAN's VGGFace2 / CelebA VGG19-BN)
and LPIPS distances (the `lpips` package, its backbone weights taken from our registry).

`VGGFeatures` returns a list of feature maps, the format `swaplab.losses.MultiLevelFeatureLoss` takes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.errors import MissingWeightsError
from swaplab.experts.base import FrozenExpert, imagenet_normalize
from swaplab.experts.registry import (
    WeightEntry,
    load_pretrained,
    load_tensors,
    register_weights,
    resolve_weights,
    seeded,
)
from swaplab.faces.crop import check_box, crop_box
from swaplab.runtime import get_logger

log = get_logger(__name__)

VGG_BLOCKS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # convolutions per block
PIX2PIX_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # pix2pixHD / FSGAN-ImageNet VGG loss
# What FSGAN's VGGLoss really compares on its VGG19-BN: it slices features at [0:2, 2:7, 7:12, 12:21, 21:30]
# (pix2pixHD's indices for a VGG19 without BN), and the in-place ReLU opening slices 2 and 4 rectifies the
# stored outputs of slices 1 and 3 afterwards.
FSGAN_LAYERS = ("relu1_1", "pool1", "relu2_2", "conv3_3", "relu4_1")
VGG_LOSS_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # per-level L1 weights of pix2pixHD's and FSGAN's VGGLoss


def _torchvision(key: str, filename: str, arch: str) -> None:
    register_weights(WeightEntry(
        key=key, filename=filename,
        source=f"https://download.pytorch.org/models/{filename} (torchvision's ImageNet weights)",
        format=f"torch state_dict of torchvision {arch} (features.N.*; classifier.* ignored), ImageNet-normalised "
               "RGB input; the hash in the file name is the start of its sha256 (torchvision's convention)",
    ))


def _fsgan(key: str, release: str, filename: str, classes: str) -> None:
    register_weights(WeightEntry(
        key=key, filename=filename,
        source=f"https://github.com/YuvalNirkin/fsgan/releases/download/{release}/{filename} "
               "(also fetched by FSGAN's download_fsgan_models.py)",
        format="FSGAN checkpoint {'state_dict': fsgan.models.vgg.vgg19 = VGG19 with BatchNorm (torchvision vgg19_bn "
               f"keys features.N.*; classifier.0 takes 512*8*8, classifier.6 has {classes} rows; classifier "
               "ignored)}; 256x256 RGB input in [-1, 1], no ImageNet normalisation. If it is refused as unsafe, "
               "re-save checkpoint['state_dict'] with torch.save in a trusted environment",
    ))


_torchvision("vgg19_imagenet", "vgg19-dcbb9e9d.pth", "vgg19")
_torchvision("vgg19_bn_imagenet", "vgg19_bn-c79401a0.pth", "vgg19_bn")
_torchvision("vgg16_imagenet", "vgg16-397923af.pth", "vgg16")
_torchvision("alexnet_imagenet", "alexnet-owt-7be5be79.pth", "alexnet")
_torchvision("squeezenet1_1_imagenet", "squeezenet1_1-b8a52dc0.pth", "squeezenet1_1")
_fsgan("fsgan_vgg19_vggface2", "v2.0.0", "vggface2_vgg19_256_1_2_id.pth", "8631 (VGGFace2 identities)")
_fsgan("fsgan_vgg19_vggface2_v1", "v1.0.1", "vggface2_vgg19_256_2_0_id.pth", "8631 (VGGFace2 identities)")
_fsgan("fsgan_vgg19_celeba_attr", "v1.0.1", "celeba_vgg19_256_2_0_28_attr.pth", "one per CelebA attribute class")
for _net in ("alex", "vgg", "squeeze"):
    register_weights(WeightEntry(
        key=f"lpips_{_net}_v0.1", filename=f"lpips/weights/v0.1/{_net}.pth",
        source="ships inside the `lpips` pip package (github.com/richzhang/PerceptualSimilarity)",
        format=f"torch state_dict of the LPIPS v0.1 linear heads (lin0..linN.model.1.weight) on {_net}",
        package=("lpips", f"weights/v0.1/{_net}.pth"),
    ))


@dataclass(frozen=True)
class VGGPreset:
    depth: int  # 16 or 19
    batch_norm: bool  # vgg*_bn layout (conv, bn, relu)
    normalization: str  # "imagenet" or "minus_one_one" (the [-1, 1] input as it is)
    layers: tuple[str, ...]  # default feature maps returned
    batch_stats: bool = False  # BatchNorm with the batch's own statistics (FSGAN never puts its VGGLoss in eval)


VGG_PRESETS = {  # by registry key: the architecture and input convention each official file wants
    "vgg19_imagenet": VGGPreset(19, False, "imagenet", PIX2PIX_LAYERS),
    "vgg19_bn_imagenet": VGGPreset(19, True, "imagenet", PIX2PIX_LAYERS),
    "vgg16_imagenet": VGGPreset(16, False, "imagenet", ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")),
    "fsgan_vgg19_vggface2": VGGPreset(19, True, "minus_one_one", FSGAN_LAYERS, batch_stats=True),
    "fsgan_vgg19_vggface2_v1": VGGPreset(19, True, "minus_one_one", FSGAN_LAYERS, batch_stats=True),
    "fsgan_vgg19_celeba_attr": VGGPreset(19, True, "minus_one_one", FSGAN_LAYERS, batch_stats=True),
}


def vgg_layer_names(depth: int = 19, batch_norm: bool = False) -> list[str]:
    """Name of every module of torchvision's `vgg{depth}[_bn].features`, by index (relu1_1 = 1 for vgg19)."""
    names = []
    for block, convs in enumerate(VGG_BLOCKS[depth], start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}"] + [f"bn{block}_{conv}"] * batch_norm + [f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


def vgg_features_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VGG state dict (torchvision, FSGAN) -> `VGGNet` keys: keep `features.*`, drop the classifier."""
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise KeyError(f"no 'features.*' keys in this VGG state dict (found {sorted(state)[:5]}...)")
    for key in [k for k in features if k.endswith(".running_mean")]:  # files saved before torch 0.4.1 lack it
        features.setdefault(key.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0))
    return features


class VGGNet(nn.Module):
    """torchvision's VGG `features` (same indices and key names, so official files load as they are)."""

    def __init__(
        self,
        depth: int = 19,  # 16 or 19 (torchvision configurations D and E)
        batch_norm: bool = False,  # vgg*_bn layout: conv, BatchNorm, ReLU
        widths: Sequence[int] = (64, 128, 256, 512, 512),  # channels per block; smaller only for tests
    ) -> None:
        super().__init__()
        self.layer_names = vgg_layer_names(depth, batch_norm)
        layers: list[nn.Module] = []
        in_ch = 3
        for width, convs in zip(widths, VGG_BLOCKS[depth], strict=True):
            for _ in range(convs):
                layers.append(nn.Conv2d(in_ch, width, 3, padding=1))
                nn.init.kaiming_normal_(layers[-1].weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layers[-1].bias)
                layers += [nn.BatchNorm2d(width)] if batch_norm else []
                layers.append(nn.ReLU())  # not in place (unlike torchvision): returned maps must keep their value
                in_ch = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)


class VGGFeatures(FrozenExpert):
    """Feature maps of a frozen VGG at named layers ("relu1_1", "conv4_2", "bn3_1", "pool3", ...).

    Input: crops B x 3 x S x S, RGB in [-1, 1]. `crop` (fractions of the side) is cut and, with `size`,
    resized; then `normalization` "imagenet" (torchvision files) or "minus_one_one" (FSGAN files, trained
    on Normalize(0.5, 0.5) inputs). Output: the requested maps in the requested order, B x C_l x H_l x W_l
    (a list; `swaplab.losses.MultiLevelFeatureLoss` takes it); the forward stops at the deepest one.
    `batch_stats`: BatchNorm layers normalise with each call's batch statistics, as in FSGAN's training
    (its VGGLoss stays in train mode); the stored running statistics are then neither used nor changed.
    """

    NORMALIZATIONS = ("imagenet", "minus_one_one")

    def __init__(self, net: VGGNet, name: str = "vgg19_imagenet", weights: str = "random",
                 layers: Sequence[str] = PIX2PIX_LAYERS, normalization: str = "imagenet",
                 crop: Sequence[float] = (0.0, 1.0), size: int | None = None, batch_stats: bool = False) -> None:
        super().__init__(net, name=name, weights=weights)
        if normalization not in self.NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {self.NORMALIZATIONS}, got {normalization!r}")
        self.crop = check_box(crop)
        self.size = size
        self.normalization = normalization
        self.batch_stats = batch_stats
        self.layers = tuple(layers)
        self.layer_indices(self.layers)

    def layer_indices(self, layers: Sequence[str]) -> list[int]:
        names = self.net.layer_names
        unknown = [layer for layer in layers if layer not in names]
        if unknown or not layers:
            raise ValueError(f"unknown VGG layers {unknown or '(none requested)'}; this net has {names}")
        return [names.index(layer) for layer in layers]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        images = crop_box(images, self.crop, self.size)
        return imagenet_normalize(images) if self.normalization == "imagenet" else images

    def forward(self, images: torch.Tensor, layers: Sequence[str] | None = None) -> list[torch.Tensor]:
        indices = self.layer_indices(self.layers if layers is None else layers)
        wanted, found = set(indices), {}
        x = self.preprocess(images)
        for i, module in enumerate(self.net.features[: max(indices) + 1]):
            if self.batch_stats and isinstance(module, nn.BatchNorm2d):
                x = F.batch_norm(x, None, None, module.weight, module.bias, True, 0.0, module.eps)
            else:
                x = module(x)
            if i in wanted:
                found[i] = x
        return [found[i] for i in indices]

    @classmethod
    def build(cls, weights: str = "random", registry_key: str = "vgg19_imagenet",
              layers: Sequence[str] | None = None, path: str | None = None, weights_dir: str | None = None,
              seed: int = 0, normalization: str | None = None, batch_stats: bool | None = None,
              crop: Sequence[float] = (0.0, 1.0), size: int | None = None,
              widths: Sequence[int] = (64, 128, 256, 512, 512)) -> VGGFeatures:
        """`registry_key` picks the official file and with it the architecture, input normalisation, default
        layers and BatchNorm mode (`VGG_PRESETS`); `layers` / `normalization` / `batch_stats` override them."""
        if registry_key not in VGG_PRESETS:
            raise KeyError(f"no VGG preset '{registry_key}'; known: {sorted(VGG_PRESETS)}")
        preset = VGG_PRESETS[registry_key]
        with seeded(seed):
            net = VGGNet(preset.depth, preset.batch_norm, widths)
        source = load_pretrained(net, weights, registry_key, path=path, weights_dir=weights_dir,
                                 convert=vgg_features_state)
        return cls(net, name=registry_key, weights=source, layers=tuple(layers or preset.layers),
                   normalization=normalization or preset.normalization, crop=crop, size=size,
                   batch_stats=preset.batch_stats if batch_stats is None else batch_stats)


LPIPS_BACKBONES = {"alex": "alexnet_imagenet", "vgg": "vgg16_imagenet", "squeeze": "squeezenet1_1_imagenet"}


def lpips_backbone_state(backbone: nn.Module) -> Callable[[dict], dict]:
    """torchvision `features.N.*` -> lpips' `sliceK.N.*` (lpips keeps torchvision's indices as the module names
    inside its slices); the classifier and modules after the last slice are dropped."""
    slice_of = {idx: name for name, part in backbone.named_children() for idx, _ in part.named_children()}

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state.items():
            match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
            if match and match.group(1) in slice_of:
                out[f"{slice_of[match.group(1)]}.{match.group(1)}.{match.group(2)}"] = value
        return out

    return convert


def _load_lpips_heads(model: nn.Module, registry_key: str, path: str | None, weights_dir: str | None) -> str:
    """The linear heads, read as tensors only (lpips itself calls torch.load without weights_only)."""
    file = resolve_weights(registry_key, path=path, weights_dir=weights_dir)
    state = load_tensors(file)
    expected = {k for k in model.state_dict() if re.match(r"lin\d+\.", k)}
    if set(state) != expected:
        raise ValueError(f"{file} does not hold the LPIPS heads {sorted(expected)} (found {sorted(state)})")
    model.load_state_dict(state, strict=False)
    return str(file)


class LPIPS(FrozenExpert):
    """LPIPS v0.1 distance (Zhang et al. 2018) between two batches: per-sample values, shape B (0 = identical).

    Input: two batches B x 3 x S x S, RGB in [-1, 1] (lpips' own convention); `crop` / `size` cut and resize
    both alike. Wraps `lpips.LPIPS` built with pnet_rand=True and pretrained=False, so lpips neither downloads
    the torchvision backbone nor unpickles its heads; `build` loads both through the registry instead.
    """

    def __init__(self, net: nn.Module, name: str = "lpips_alex", weights: str = "random",
                 crop: Sequence[float] = (0.0, 1.0), size: int | None = None) -> None:
        super().__init__(net, name=name, weights=weights)
        self.crop = check_box(crop)
        self.size = size

    def forward(self, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        a, b = crop_box(images, self.crop, self.size), crop_box(reference, self.crop, self.size)
        return self.net(a, b).reshape(-1)

    @classmethod
    def build(cls, weights: str = "random", net: str = "alex", path: str | None = None,
              lin_path: str | None = None, weights_dir: str | None = None, registry_key: str | None = None,
              lin_registry_key: str | None = None, seed: int = 0, require_backbone: bool = False,
              crop: Sequence[float] = (0.0, 1.0), size: int | None = None) -> LPIPS:
        """`"pretrained"`: heads from the lpips package (or `lin_path`), backbone from the torchvision file
        (`path`, else `<weights_dir>/<file name>`); when that file is absent the backbone stays random, which
        is logged and written into `weights` (unless `require_backbone`: then it is an error)."""
        import lpips  # lpips: only when the LPIPS expert is built

        if net not in LPIPS_BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
        if weights not in ("random", "pretrained"):
            raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
        registry_key = registry_key or LPIPS_BACKBONES[net]
        with seeded(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`, which lpips passes
            model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
        source = "random"
        if weights == "pretrained":
            heads = _load_lpips_heads(model, lin_registry_key or f"lpips_{net}_v0.1", lin_path, weights_dir)
            try:
                backbone = load_pretrained(model.net, "pretrained", registry_key, path=path, weights_dir=weights_dir,
                                           convert=lpips_backbone_state(model.net))
            except MissingWeightsError as err:
                if require_backbone or path:
                    raise
                log.warning("LPIPS backbone is RANDOM, so its distances are not LPIPS: %s", err)
                backbone = "RANDOM"
            source = f"lin={heads}; backbone={backbone}"
        return cls(model, name=f"lpips_{net}", weights=source, crop=crop, size=size)
