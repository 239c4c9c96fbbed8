"""dlib's landmark predictors (iBUG 68 / dlib 5 points) and its ResNet 128-D face descriptor (the evaluation
identity model of face_recognition), with the official files shipped by the `face_recognition_models` package.

These are dlib C++ models, not torch networks: each is an nn.Module without parameters (describe() reports 0)
that carries `name` and `weights` (the .dat file), always stays in eval mode, is shared by deepcopy and pickles
as its file path. dlib loads its own serialisation format (no pickled Python objects). No gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from swaplab.experts.base import ExternalModel
from swaplab.experts.registry import WeightEntry, register_weights, resolve_weights
from swaplab.faces.crop import DLIB_FACE_BOX
from swaplab.faces.landmarks import DLIB_MEAN_FACE_ARCFACE5, dlib5_to_arcface, landmarks68_to_arcface
from swaplab.faces.templates import FACESHIFTER_BOX, arcface_template, similarity_transform
from swaplab.imaging import to_uint8

_FRM = ("http://dlib.net/files/{}.bz2 (unpack with bunzip2); also shipped by `pip install face_recognition_models` "
        "(github.com/ageitgey/face_recognition_models)")
for _key, _file, _fmt in (
    ("dlib_shape_predictor_68", "shape_predictor_68_face_landmarks.dat",
     "dlib shape_predictor, 68 iBUG points, trained on iBUG 300-W with dlib HOG-detector boxes"),
    ("dlib_shape_predictor_5", "shape_predictor_5_face_landmarks.dat",
     "dlib shape_predictor, 5 points (2 corners per eye, nose base), dlib HOG / MMOD boxes"),
    ("dlib_face_recognition_resnet_v1", "dlib_face_recognition_resnet_model_v1.dat",
     "dlib ResNet-29 metric net (dlib.face_recognition_model_v1): 150x150 uint8 RGB chips aligned by "
     "dlib.get_face_chip(size=150, padding=0.25) -> 128-D descriptor; same person if distance < 0.6"),
):
    register_weights(WeightEntry(key=_key, filename=_file, source=_FRM.format(_file), format=_fmt,
                                 package=("face_recognition_models", f"models/{_file}")))

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # the chips the descriptor net was trained on


def to_full_object_detections(shapes: Any) -> Any:
    """N x K x 2 landmark arrays (or dlib full_object_detection objects) -> dlib.full_object_detections."""
    import dlib  # dlib (C++ extension, slow to import): only when a dlib model is built or run

    out = dlib.full_object_detections()
    for s in shapes:
        if not isinstance(s, dlib.full_object_detection):
            pts = np.rint(np.asarray(s)).astype(int)
            (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
            s = dlib.full_object_detection(dlib.rectangle(int(x1), int(y1), int(x2), int(y2)),
                                           [dlib.point(int(x), int(y)) for x, y in pts])
        out.append(s)
    return out


class DlibModel(ExternalModel):
    """A dlib model loaded from its .dat file (`weights`)."""

    @staticmethod
    def _resolve(weights: str, registry_key: str, path: str | None, weights_dir: str | None) -> str:
        if weights != "pretrained":
            raise ValueError(f"dlib models only exist pretrained, got weights={weights!r}")
        return str(resolve_weights(registry_key, path, weights_dir))


class DlibLandmarks(DlibModel):
    """dlib shape predictor: (uint8 H x W x 3 RGB image, N x 4 boxes x1 y1 x2 y2) -> N x K x 2 float32 pixel
    points, K = 68 (iBUG order) or 5 (dlib order, see `dlib5_to_arcface`). Trained on dlib's HOG boxes:
    other detectors' boxes (MTCNN is tighter) shift the points a little."""

    def __init__(self, weights: str, name: str = "dlib_landmarks68", num_points: int = 68) -> None:
        super().__init__(weights, name)
        self.num_points = int(num_points)  # 68 or 5: must match the file

    @staticmethod
    def _load(path: str) -> Any:
        import dlib  # dlib (C++ extension, slow to import): only when a dlib model is built or run

        return dlib.shape_predictor(path)

    def shapes(self, image: np.ndarray, boxes: np.ndarray) -> list[Any]:
        import dlib  # dlib (C++ extension, slow to import): only when a dlib model is built or run

        rects = [dlib.rectangle(*(int(v) for v in np.rint(b[:4]) - [0, 0, 1, 1])) for b in np.asarray(boxes)]
        return [self.model(image, r) for r in rects]

    def forward(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        pts = [[(p.x, p.y) for p in s.parts()] for s in self.shapes(image, boxes)]
        return np.asarray(pts, np.float32).reshape(len(pts), self.num_points, 2)

    def arcface_points(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """N x 5 x 2 ArcFace-order points; with the 5-point model the mouth corners do not exist and are NaN."""
        pts = self(image, boxes)
        if pts.shape[1] == 68:
            return landmarks68_to_arcface(pts)
        out = np.full((len(pts), 5, 2), np.nan, np.float32)
        out[:, :3] = dlib5_to_arcface(pts).reshape(len(pts), 3, 2)
        return out

    @classmethod
    def build(cls, points: int = 68, weights: str = "pretrained", path: str | None = None,
              weights_dir: str | None = None, registry_key: str | None = None,
              name: str | None = None) -> DlibLandmarks:
        if points not in (5, 68):
            raise ValueError(f"dlib shape predictors have 5 or 68 points, got {points}")
        key = registry_key or f"dlib_shape_predictor_{points}"
        return cls(cls._resolve(weights, key, path, weights_dir), name=name or f"dlib_landmarks{points}",
                   num_points=points)


@torch.no_grad()
def dlib_landmarks(expert: DlibLandmarks, images: torch.Tensor,
                   box: Sequence[float] = DLIB_FACE_BOX) -> torch.Tensor:
    """B x K x 2 pixel landmarks of canonical crops (B x 3 x S x S in [-1, 1]) from a dlib landmarks expert run
    on the fixed face box `box` (fractions of the side; no detection), on the images' device and dtype. dlib
    is a per-image C++ API: this loops over the batch on the CPU. Used by FSGAN and the landmark_error metric."""
    frames = to_uint8(images).cpu().numpy()
    rect = np.asarray([box], np.float32) * images.shape[-1]
    points = np.stack([expert(np.ascontiguousarray(frame), rect)[0] for frame in frames])
    return torch.from_numpy(points).to(images.device, images.dtype)


class DlibFaceDescriptor(DlibModel):
    """dlib's ResNet face descriptor: 128-D vectors, same person when the Euclidean distance is < 0.6.

    `forward(images)`: canonical aligned crops, B x 3 x S x S RGB in [-1, 1] whose ArcFace-112 square is
    `box` (default: the ArcFace template scaled by 1/0.85 into the crop) -> B x 128 float32 on their device.
    Each crop is resampled (bilinear, batched in torch; first halved while dlib's pyramid would be) into a
    150 x 150 uint8 chip by one fixed similarity: the least-squares fit of ArcFace's 5 template points onto
    the same 5 points of dlib's mean face in its chip (size 150, padding 0.25). This is exact for a face with
    the mean face's proportions; dlib itself fits 33 points of each face's own 68 (or its 5 eye / nose points),
    so real faces land up to a few chip pixels differently. `from_image` is dlib's own exact alignment.
    """

    def __init__(self, weights: str, name: str = "dlib_face_descriptor",
                 box: Sequence[float] = FACESHIFTER_BOX, num_jitters: int = 0) -> None:
        super().__init__(weights, name)
        self.box = (float(box[0]), float(box[1]))  # the ArcFace-112 square inside the canonical crop
        self.num_jitters = int(num_jitters)  # dlib's test-time augmentation: average of n jittered chips

    @staticmethod
    def _load(path: str) -> Any:
        import dlib  # dlib (C++ extension, slow to import): only when a dlib model is built or run

        return dlib.face_recognition_model_v1(path)

    def chip_to_crop(self, size: int) -> np.ndarray:
        """2 x 3 similarity mapping chip pixel coordinates to canonical-crop pixel coordinates (size S)."""
        chip = (CHIP_PADDING + DLIB_MEAN_FACE_ARCFACE5) / (1 + 2 * CHIP_PADDING) * CHIP_SIZE
        return similarity_transform(chip, arcface_template(size, self.box))

    def chips(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical crops -> B x 150 x 150 x 3 uint8 chips (on the input device)."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected B x 3 x S x S crops in [-1, 1], got {tuple(images.shape)}")
        x, size = images.detach().float(), images.shape[-1]
        matrix = self.chip_to_crop(size)
        while np.hypot(*matrix[:, 0]) > 2:  # like dlib's extract_image_chip: halve the image before bilinear
            x = F.interpolate(x, size=(size // 2, size // 2), mode="bilinear", antialias=True, align_corners=False)
            r, size = (size // 2) / size, size // 2
            matrix = matrix * r + [[0, 0, 0.5 * r - 0.5]] * 2  # pixel centres: x' = (x + 0.5) r - 0.5
        u = torch.arange(CHIP_SIZE, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1)  # (u, v) chip pixel centres
        src = grid @ torch.from_numpy(matrix[:, :2]).T + torch.from_numpy(matrix[:, 2])
        src = (2 * src + 1) / size - 1  # pixel centres -> grid_sample's [-1, 1] (align_corners=False)
        grid = src.to(x.device, torch.float32)[None].expand(len(x), -1, -1, -1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return to_uint8(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            chips = [np.ascontiguousarray(c) for c in self.chips(images).cpu().numpy()]
        if not chips:
            return torch.zeros(0, 128, device=images.device)
        vecs = self.model.compute_face_descriptor(chips, self.num_jitters)  # one batched call
        return torch.from_numpy(np.asarray([np.asarray(v) for v in vecs], np.float32)).to(images.device)

    def from_image(self, image: np.ndarray, shapes: Any) -> np.ndarray:
        """Reference path: dlib's own alignment (get_face_chip, size 150, padding 0.25) of the faces given by
        `shapes` (dlib full_object_detections, or N x 68 x 2 / N x 5 x 2 dlib-order points) in a uint8
        H x W x 3 RGB image -> N x 128 float32."""
        dets = to_full_object_detections(shapes)
        if len(dets) == 0:
            return np.zeros((0, 128), np.float32)
        vecs = self.model.compute_face_descriptor(image, dets, self.num_jitters, CHIP_PADDING)
        return np.asarray([np.asarray(v) for v in vecs], np.float32)

    def chips_from_image(self, image: np.ndarray, shapes: Any) -> np.ndarray:
        """dlib's own 150 x 150 chips (N x 150 x 150 x 3 uint8) for the faces given by `shapes`."""
        import dlib  # dlib (C++ extension, slow to import): only when a dlib model is built or run

        chips = dlib.get_face_chips(image, to_full_object_detections(shapes), CHIP_SIZE, CHIP_PADDING)
        return np.asarray(chips, np.uint8).reshape(-1, CHIP_SIZE, CHIP_SIZE, 3)

    @classmethod
    def build(cls, weights: str = "pretrained", path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "dlib_face_recognition_resnet_v1", box: Sequence[float] = FACESHIFTER_BOX,
              num_jitters: int = 0, name: str = "dlib_face_descriptor") -> DlibFaceDescriptor:
        return cls(cls._resolve(weights, registry_key, path, weights_dir), name=name, box=box,
                   num_jitters=num_jitters)
