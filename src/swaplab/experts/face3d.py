"""Deep3DFaceRecon_pytorch's coefficient regressor (R-Net: ResNet-50 + seven 1x1 conv heads, the official
`ReconNetWrapper` key names) and the 3DMM expert around it, with an optional BFM for landmarks.

Input alignment. Their `align_img` fits 5 points (eye centres, nose tip, mouth corners) to a standard 3D face
by least squares (scaled orthographic, POS), rescales so that 1 dm of that face spans 102 px and cuts 224 x
224 around its origin. Mapping the pytorch release's standard points (eyes (+-0.31, 0.09), nose (0.00, -0.25),
mouth corners (+-0.25, -0.58) dm, as later code of the same authors hard-codes them) into the
FaceShifter/ArcFace-256 crop (the ArcFace 112 template scaled by 218/112 and shifted by 19 px) with a best
similarity gives the box x in [1.4, 254.8], y in [3.8, 257.3] px (fit residual < 2 px): the whole canonical
crop, resized to 224, is Deep3DFaceRecon's own alignment to within ~3 px, hence the default `crop=(0, 1)`
(what public HifiFace implementations feed as well). (The TensorFlow release's standard points sit 0.2 dm
higher, y 0.29 for the eyes, which would put that box 23 px lower; if a checkpoint was trained on such crops,
the default sees faces ~23 px of 224 too high.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import Bottleneck, ResNet

from swaplab.experts.base import FrozenExpert
from swaplab.experts.bfm import (
    BFM,
    N_ANGLE,
    N_EXP,
    N_GAMMA,
    N_ID,
    N_TEX,
    FaceCoefficients,
)
from swaplab.experts.registry import WeightEntry, load_pretrained, register_weights, seeded
from swaplab.faces.crop import check_box, crop_box

HEADS = (N_ID, N_EXP, N_TEX, N_ANGLE, N_GAMMA, 2, 1)  # id, exp, tex, angle, gamma, trans xy, trans z

register_weights(WeightEntry(
    key="deep3dfacerecon_epoch20",
    filename="epoch_20.pth",
    source="Deep3DFaceRecon_pytorch README 'Inference with a pre-trained model' (github.com/sicxu/"
           "Deep3DFaceRecon_pytorch): Google Drive folder with checkpoints/<model_name>/epoch_20.pth",
    format="torch dict {'net_recon': ReconNetWrapper state dict (backbone.* = torchvision ResNet-50 without fc, "
           "final_layers.0-6 = 1x1 convs 80/64/80/3/27/2/1), 'opt_00', 'sched_00'}; input 224x224 RGB in "
           "[0, 1] aligned by their align_img; output 257 coefficients",
))


class ReconNet(nn.Module):
    """ResNet-50 (torchvision layout, no fc) + 1x1 conv heads; state dict keys = the official net_recon."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),  # bottleneck blocks per stage (ResNet-50); fewer only for tests
        input_size: int = 224,  # side the crop is resized to (224 for the official checkpoint)
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        self.backbone = resnet50(weights=None) if layers == (3, 4, 6, 3) else ResNet(Bottleneck, list(layers))
        self.backbone.fc = nn.Identity()  # the official wrapper drops fc; no fc.* keys
        self.input_size = int(input_size)
        width = 512 * Bottleneck.expansion
        self.final_layers = nn.ModuleList(nn.Conv2d(width, n, kernel_size=1, bias=True) for n in HEADS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, 257) coefficients."""
        feat = self.backbone(x)[:, :, None, None]
        return torch.cat([head(feat) for head in self.final_layers], dim=1).flatten(1)


class FaceReconstructor(FrozenExpert):
    """3DMM coefficients (Deep3DFaceRecon) of aligned faces, and their landmarks when a BFM is attached.

    Input: the training crop, B x 3 x S x S RGB in [-1, 1]; `crop` (fractions of the side) is cut and
    resized to 224 and mapped to [0, 1] RGB, the official network input (see the module docstring for the
    box). Output: `FaceCoefficients` (id 80, exp 64, tex 80, angle 3 rad, gamma 27, trans 3).
    """

    def __init__(self, net: ReconNet, name: str = "deep3dfacerecon", weights: str = "random",
                 crop: Sequence[float] = (0.0, 1.0), bfm: BFM | None = None) -> None:
        super().__init__(net, name=name, weights=weights)
        self.crop = check_box(crop)
        self.bfm = bfm  # non-persistent buffers only: never in a checkpoint

    def forward(self, images: torch.Tensor) -> FaceCoefficients:
        x = (crop_box(images, self.crop, self.net.input_size) + 1) / 2
        return FaceCoefficients.from_vector(self.net(x))

    def landmarks(self, coeffs: FaceCoefficients) -> torch.Tensor:
        """(B, 68, 2) BFM landmarks of `coeffs`, pixels of the 224 crop (x right, y down)."""
        if self.bfm is None:
            raise RuntimeError("FaceReconstructor was built without a BFM (build(..., bfm='pretrained'))")
        return self.bfm.landmarks(coeffs)

    @classmethod
    def build(cls, weights: str = "random", path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "deep3dfacerecon_epoch20", seed: int = 0, bfm: str | None = None,
              bfm_path: str | None = None, layers: Sequence[int] = (3, 4, 6, 3), input_size: int = 224,
              **kwargs) -> FaceReconstructor:
        """`weights`: "random" (seeded) or "pretrained" (`epoch_20.pth`, its 'net_recon' entry). `bfm`: None
        (coefficients only), "pretrained" (`BFM_model_front.mat` from `bfm_path` / `weights_dir`) or
        "synthetic" (a random stand-in for tests and the quickstart)."""
        with seeded(seed):
            net = ReconNet(layers=layers, input_size=input_size)
            for head in net.final_layers:  # the official heads start at zero; keep random outputs small
                nn.init.normal_(head.weight, std=1e-3)
                nn.init.zeros_(head.bias)
        source = load_pretrained(net, weights, registry_key, path=path, weights_dir=weights_dir, subkey="net_recon")
        model = None
        if bfm == "pretrained":
            model = BFM.build(path=bfm_path, weights_dir=weights_dir)
        elif bfm == "synthetic":
            model = BFM.synthetic(seed=seed)
        elif bfm is not None:
            raise ValueError(f"bfm must be None, 'pretrained' or 'synthetic', got {bfm!r}")
        return cls(net, weights=source, bfm=model, **kwargs)

