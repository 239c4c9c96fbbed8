"""FaceNet identity network: facenet-pytorch's InceptionResnetV1 (the installed package's class, built without
its downloader) and the two official state dicts it publishes.

Convention of those files: 160x160 RGB face crops cut from an MTCNN box plus margin (the box is rectangular and
is squashed to the square), standardised as `(pixel - 127.5) / 128` (facenet-pytorch's
`fixed_image_standardization`), i.e. `x * 127.5 / 128` for x in [-1, 1]; output 512-D, l2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from swaplab.experts.registry import WeightEntry, register_weights

FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
FACENET_SCALE = 127.5 / 128  # fixed_image_standardization expressed on [-1, 1] inputs

# (left, top, right, bottom) of the facenet crop inside the canonical 256 crop, in fractions of the side:
# (44, 44, 212, 252) / 256. It is where an MTCNN box plus facenet-pytorch's margin=14 (the setting of its
# LFW evaluation, close to davidsandberg/facenet's training crops: 182 px with margin 44, centre 160) falls
# once the face is aligned to the ArcFace template that the canonical crop is built on. Measured by mapping
# MTCNN detections (facenet-pytorch's bundled weights, 5 landmarks) through the landmark similarity onto that
# template: median over 99 faces of skimage's lfw_subset (0.19, 0.13, 0.81, 0.99) and skimage's astronaut
# (0.17, 0.20, 0.83, 0.98: mean of the image, its mirror and its half-size copy). The box is taller than wide and lower than the ArcFace box (19/256, 237/256):
# MTCNN boxes run from the brows to below the chin, so a square crop would cut the chin and add forehead.
FACENET_CROP = (44 / 256, 44 / 256, 212 / 256, 252 / 256)

FACENET_FILES = {  # registry key -> (file name as published, dataset, classifier classes stored in the file)
    "facenet_vggface2": ("20180402-114759-vggface2.pt", "VGGFace2", 8631),
    "facenet_casia_webface": ("20180408-102900-casia-webface.pt", "CASIA-WebFace", 10575),
}
for _key, (_file, _data, _classes) in FACENET_FILES.items():
    register_weights(WeightEntry(
        key=_key,
        filename=_file,
        source=f"{FACENET_RELEASE}{_file} (facenet-pytorch release v2.2.9; also in the torch hub cache "
               "<TORCH_HOME>/checkpoints after InceptionResnetV1(pretrained=...))",
        format=f"torch state_dict of facenet-pytorch InceptionResnetV1 trained on {_data} (+ logits head, "
               f"{_classes} classes, unused), 160x160 RGB, (pixel - 127.5) / 128",
    ))


def inception_resnet_v1() -> nn.Module:
    """The package's InceptionResnetV1 as a bare embedding network (no download, no classifier head)."""
    from facenet_pytorch import InceptionResnetV1  # facenet-pytorch: only when FaceNet is built

    net = InceptionResnetV1(pretrained=None, classify=False)
    net.input_size = 160
    return net


def drop_logits(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official files carry the training classifier (`logits.*`); the embedding does not use it."""
    return {k: v for k, v in state.items() if not k.startswith("logits.")}


def torch_hub_copy(filename: str) -> Path | None:
    """Where `InceptionResnetV1(pretrained=...)` caches the file (<TORCH_HOME>/checkpoints), if it is there."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    candidate = Path(get_torch_home()) / "checkpoints" / filename
    return candidate if candidate.is_file() else None
