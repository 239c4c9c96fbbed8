"""Identity experts: frozen face-recognition networks that turn aligned faces into unit-norm embeddings.

`IResNet` is the backbone of InsightFace arcface_torch (same module and key names as the published
`backbone.pth`, so official checkpoints load as they are). `IdentityEncoder` wraps any identity network
behind one interface, with one builder per architecture: `build` (IResNet), `build_ir_se` (TreB1eN IR-SE,
swaplab.experts.irse) and `build_facenet` (facenet-pytorch InceptionResnetV1, swaplab.experts.facenet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.experts.base import FrozenExpert
from swaplab.experts.facenet import (
    FACENET_CROP,
    FACENET_FILES,
    FACENET_SCALE,
    drop_logits,
    inception_resnet_v1,
    torch_hub_copy,
)
from swaplab.experts.irse import IRSE
from swaplab.experts.registry import (
    WeightEntry,
    load_pretrained,
    register_weights,
    seeded,
)
from swaplab.faces.crop import check_box, crop_box

IRESNET_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}
ARCFACE_CROP = (19 / 256, 237 / 256)  # ArcFace 112 alignment inside the FaceShifter 256 crop

# arcface_torch model zoo (README "Model Zoo": OneDrive / Baidu folders, one backbone.pth per folder). The
# "_fp16" in the names is the training's mixed precision (autocast); the files hold float32 tensors (their
# published sizes, 91/130/166/248 MB for r18/34/50/100, are the float32 sizes of these networks).
ARCFACE_ZOO = "InsightFace arcface_torch model zoo (github.com/deepinsight/insightface/tree/master/recognition/arcface_torch)"
IRESNET_FILES = {  # registry key -> (file name as published, depth)
    **{f"arcface_r{d}_ms1mv3": (f"ms1mv3_arcface_r{d}_fp16/backbone.pth", d) for d in (18, 34, 50, 100)},
    **{f"cosface_r{d}_glint360k": (f"glint360k_cosface_r{d}_fp16_0.1/backbone.pth", d) for d in (18, 34, 50, 100)},
}
for _key, (_file, _depth) in IRESNET_FILES.items():
    register_weights(WeightEntry(
        key=_key, filename=_file, source=ARCFACE_ZOO,
        format=f"torch state_dict of IResNet-{_depth} (arcface_torch key names), 112x112 RGB input in [-1, 1]",
    ))


# Face recognizers trained by swaplab on procedural people (experiment=identity_synthetic[_eval]), shipped inside the
# package: the identity networks of experts=synthetic. key -> (file, widths, sha256 of the shipped file)
SYNTHETIC_IDENTITY_FILES = {
    "synthetic_identity_r18a": ("synthetic_identity_r18a.pt", (16, 32, 64, 128), "identity_synthetic",
                                "d318b11879cebdda40707301c10f8aa1be256e0c086e7a6a3623a1a46fcb3ee2"),
    "synthetic_identity_r18b": ("synthetic_identity_r18b.pt", (12, 24, 48, 96), "identity_synthetic_eval",
                                "a72fd6bc183cb56e80662a32597a4fcbe4978dcf9ede5bf00ebbb69be842c060"),
}
for _key, (_file, _widths, _experiment, _sha) in SYNTHETIC_IDENTITY_FILES.items():
    register_weights(WeightEntry(
        key=_key, filename=_file, sha256=_sha, package=("swaplab", f"experts/weights/{_file}"),
        source=f"shipped with swaplab (src/swaplab/experts/weights/{_file}); reproduce with `python train.py "
               f"experiment={_experiment}` and `python -m swaplab.models.identity.export <run dir>/checkpoints/"
               f"last.ckpt {_file}`",
        format=f"torch state_dict of IResNet-18 (widths {list(_widths)}, 48x48 input, 128-D), trained on procedural "
               "faces only (swaplab.data.identities); licence: as swaplab",
    ))


class IdentityEncoder(FrozenExpert):
    """Unit-norm identity embeddings (B x D) of aligned faces, whatever the recognition network.

    Input: the canonical training crops, B x 3 x S x S RGB in [-1, 1] (any S). `crop` is where the network's
    own alignment lies inside that crop, in fractions of the side: (lo, hi) for a square box or
    (left, top, right, bottom); it is cut, resized to `input_size`, flipped to BGR if `bgr`, multiplied by
    `scale` (the net's normalisation, expressed on [-1, 1] inputs) and embedded. Per architecture:

    - IResNet (arcface_torch, `build`): crop (19/256, 237/256) = ArcFace 112 inside the FaceShifter 256 crop,
      112x112, (pixel/255 - 0.5) / 0.5 = x (scale 1).
    - IR-SE50 (TreB1eN, `build_ir_se`): same crop (FaceShifter's own choice for this net), 112x112, x.
      (pSp/e4e cut rows 35:223, cols 32:220 of their FFHQ-aligned 256 crop: (32, 35, 220, 223) / 256.)
    - InceptionResnetV1 (facenet-pytorch, `build_facenet`): crop FACENET_CROP (see swaplab.experts.facenet),
      160x160, (pixel - 127.5) / 128 = x * 127.5 / 128.
    """

    def __init__(self, net: nn.Module, name: str = "arcface", weights: str = "random",
                 crop: Sequence[float] = ARCFACE_CROP, input_size: int | None = None, scale: float = 1.0,
                 bgr: bool = False) -> None:
        super().__init__(net, name=name, weights=weights)
        self.crop = check_box(crop)
        self.input_size = int(input_size or net.input_size)
        self.scale = float(scale)
        self.bgr = bool(bgr)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        faces = crop_box(images, self.crop, self.input_size)
        if self.bgr:
            faces = faces.flip(1)
        if self.scale != 1.0:
            faces = faces * self.scale
        dtype = next(self.net.parameters()).dtype
        return F.normalize(self.net(faces.to(dtype)), dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, crop={tuple(round(v, 4) for v in self.crop)}, input_size={self.input_size}"

    @classmethod
    def _assemble(cls, make_net: Callable[[], nn.Module], weights: str, registry_key: str, path: str | None,
                  weights_dir: str | None, seed: int, convert: Callable[[dict], dict] | None,
                  **kwargs) -> IdentityEncoder:
        with seeded(seed):
            net = make_net()
        source = load_pretrained(net, weights, registry_key, path=path, weights_dir=weights_dir, convert=convert)
        return cls(net, weights=source, **kwargs)

    @staticmethod
    def _net_kwargs(kwargs: dict, names: Sequence[str]) -> dict:
        return {k: kwargs.pop(k) for k in names if k in kwargs}

    @classmethod
    def build(cls, weights: str = "random", depth: int | None = None, path: str | None = None,
              weights_dir: str | None = None, registry_key: str = "arcface_r100_ms1mv3", seed: int = 0,
              **kwargs) -> IdentityEncoder:
        """arcface_torch IResNet. `weights="random"` (seeded: the same on every rank and every run) for tests
        and the quickstart, `"pretrained"` for the registry file. `depth` defaults to the registry file's;
        IResNet kwargs (widths, input_size, embedding_size, layers) shrink it for tests; the rest (crop, name,
        bgr) go to the encoder."""
        depth = depth or IRESNET_FILES.get(registry_key, ("", 100))[1]
        net_kwargs = cls._net_kwargs(kwargs, ("widths", "input_size", "embedding_size", "layers"))
        kwargs.setdefault("name", "arcface")
        return cls._assemble(lambda: IResNet(depth=depth, **net_kwargs), weights, registry_key, path,
                             weights_dir, seed, None, **kwargs)

    @classmethod
    def build_ir_se(cls, weights: str = "random", num_layers: int = 50, path: str | None = None,
                    weights_dir: str | None = None, registry_key: str = "ir_se50_treb1en", seed: int = 0,
                    **kwargs) -> IdentityEncoder:
        """TreB1eN IR-SE (`model_ir_se50.pth`). IRSE kwargs (widths, input_size, embedding_size, layers, se,
        affine) shrink it for tests; the rest (crop, name, bgr) go to the encoder."""
        net_kwargs = cls._net_kwargs(kwargs, ("widths", "input_size", "embedding_size", "layers", "se", "affine"))
        kwargs.setdefault("name", f"ir_se{num_layers}")
        return cls._assemble(lambda: IRSE(num_layers=num_layers, **net_kwargs), weights, registry_key, path,
                             weights_dir, seed, None, **kwargs)

    @classmethod
    def build_facenet(cls, weights: str = "random", path: str | None = None, weights_dir: str | None = None,
                      registry_key: str = "facenet_vggface2", seed: int = 0,
                      crop: Sequence[float] = FACENET_CROP, **kwargs) -> IdentityEncoder:
        """facenet-pytorch InceptionResnetV1 (fixed architecture, 160x160). Besides the registry's places, the
        file is also found where facenet-pytorch's own downloader caches it (<TORCH_HOME>/checkpoints)."""
        if weights == "pretrained" and not path and registry_key in FACENET_FILES:
            filename = FACENET_FILES[registry_key][0]
            if not (Path(weights_dir or "weights") / filename).is_file():
                path = torch_hub_copy(filename)  # None: the registry's error says where to get it
        kwargs.setdefault("name", "facenet")
        kwargs.setdefault("scale", FACENET_SCALE)
        return cls._assemble(inception_resnet_v1, weights, registry_key, path, weights_dir, seed,
                             drop_logits, crop=crop, **kwargs)


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
    """IResNet backbone; defaults reproduce arcface_torch (widths 64..512, 112x112 input, 512-D output).

    arcface_torch's `fp16=True` only runs the convolutions under CUDA autocast; here the caller's autocast
    decides, the weights are float32 either way."""

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
