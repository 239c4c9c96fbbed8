"""A face-parsing stand-in without a parsing network: regions drawn from dlib's 68 landmarks.

No face-parsing network's weights can be had offline (BiSeNet's `79999_iter.pth` is on Google Drive only), so
`experts=offline` uses this instead of a randomly initialised BiSeNet: the face is the convex hull of the 68
points (jaw line to brows; no forehead unless `forehead` > 0, no ears, no hair: the hair group stays empty),
and inside it the brows, eyes, nose, lips and inner mouth are polygons of their landmarks, all with the 19
CelebAMask-HQ labels and the same interface as FaceParser (logits, labels, masks, group masks / labels), so
every caller works unchanged. dlib's `l_` / `r_` parts are the ones on the image's left / right.

It is not differentiable with respect to the image (dlib's landmarks are not torch): every current use of the
parsing role (FSGAN's segmentation labels, HifiFace's target mask, paste-back, the swap pipeline's mask and
stored labels) takes hard labels without a gradient. The landmark step loops over the batch on the CPU (dlib's
C++ API is per image, and so is the 68-point convex hull); the drawing is batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from swaplab.experts.dlib_models import DlibLandmarks, dlib_landmarks
from swaplab.experts.parsing import ParsingRegions
from swaplab.faces.crop import DLIB_FACE_BOX
from swaplab.faces.parsing import CELEBAMASK_CLASSES, DEFAULT_GROUPS, group_matrix
from swaplab.runtime import get_logger

log = get_logger(__name__)

BROW_THICKNESS = 0.3  # a brow's polygon: its 5 points and the same points moved this far towards the eye
# (class, landmark indices of its polygon, in drawing order: later parts cover earlier ones)
PART_POLYGONS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("nose", (27, 31, 32, 33, 34, 35)),
    ("l_eye", tuple(range(36, 42))),
    ("r_eye", tuple(range(42, 48))),
    ("u_lip", (48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60)),
    ("l_lip", (54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64)),
    ("mouth", tuple(range(60, 68))),
)
BROWS = (("l_brow", tuple(range(17, 22)), tuple(range(36, 42))), ("r_brow", tuple(range(22, 27)), tuple(range(42, 48))))
LOGIT = 1e4  # logits are 0 for the drawn class and -LOGIT elsewhere: softmax is exactly one-hot


def inside_polygon(polygon: torch.Tensor, size: int) -> torch.Tensor:
    """B x K x 2 closed polygons (x, y pixel coordinates; pixel (i, j) has its centre at x=j, y=i) ->
    B x size x size bool, by the even-odd crossing rule (non-convex polygons too; a repeated vertex is
    harmless)."""
    coords = torch.arange(size, device=polygon.device, dtype=polygon.dtype)
    py, px = coords.view(size, 1, 1), coords.view(1, size, 1)
    a, b = polygon[:, None, None], polygon.roll(-1, dims=1)[:, None, None]  # B 1 1 K 2
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    straddles = (ay > py) != (by > py)  # B S 1 K
    x_cross = ax + (py - ay) * (bx - ax) / torch.where(by == ay, torch.ones_like(by), by - ay)
    return ((straddles & (px < x_cross)).sum(-1) % 2).bool()


def convex_hulls(points: np.ndarray, forehead: float = 0.0) -> np.ndarray:
    """B x 68 x 2 -> B x K x 2 convex hull of each face's points (padded by repeating its last vertex), the
    brows first raised by `forehead` x the brow-to-chin height."""
    import cv2

    pts = points.astype(np.float32).copy()
    if forehead > 0:
        lift = forehead * (pts[:, 8:9, 1] - pts[:, 17:27, 1].mean(1, keepdims=True))
        pts = np.concatenate([pts, pts[:, 17:27] - np.stack([np.zeros_like(lift), lift], -1)], axis=1)
    hulls = [cv2.convexHull(face)[:, 0] for face in pts]
    width = max(len(h) for h in hulls)
    return np.stack([np.concatenate([h, np.repeat(h[-1:], width - len(h), 0)]) for h in hulls])


class LandmarkHullParser(ParsingRegions, nn.Module):
    """FaceParser's interface on aligned crops (B x 3 x S x S RGB in [-1, 1]) with regions drawn from dlib's 68
    landmarks (found in the fixed face box `box` of the canonical crop, as CropLandmarkPose does)."""

    spatial_output = True  # labels are maps over the input crop (see Experts.set_input_template)

    def __init__(self, landmarks: DlibLandmarks, box: Sequence[float] = DLIB_FACE_BOX, forehead: float = 0.0,
                 groups: Mapping[str, Sequence[str | int]] | None = None, rest: str | None = "background",
                 name: str = "landmark_hull_parser") -> None:
        super().__init__()
        self.landmarks, self.box, self.forehead = landmarks, tuple(float(v) for v in box), float(forehead)
        self.name = name
        self.weights = f"no parsing network: regions drawn from dlib's 68 landmarks ({landmarks.weights})"
        self.model_file = landmarks.model_file  # what its answers depend on (weights_sha256)
        groups = DEFAULT_GROUPS if groups is None else {str(k): list(v) for k, v in groups.items()}
        self.group_names, matrix = group_matrix(groups, rest)
        self.register_buffer("class_to_group", matrix, persistent=False)
        self.training = False
        log.warning("Expert '%s' is NO parsing network: a stand-in that draws face regions from dlib's 68 "
                    "landmarks (convex hull, part polygons; no hair, no ears%s).", name,
                    "" if self.forehead > 0 else ", no forehead")

    def train(self, mode: bool = True) -> LandmarkHullParser:
        return super().train(False)

    def __deepcopy__(self, memo: dict) -> LandmarkHullParser:
        return self  # shared by reference, like every expert

    @property
    def device(self) -> torch.device:
        return self.class_to_group.device

    def labels_from_points(self, points: torch.Tensor, size: int) -> torch.Tensor:
        """B x 68 x 2 landmarks (pixels of S x S crops) -> B x S x S CelebAMask-HQ labels."""
        pts = points.float()
        hull = torch.from_numpy(convex_hulls(pts.cpu().numpy(), self.forehead)).to(pts.device)
        labels = torch.where(inside_polygon(hull, size), CELEBAMASK_CLASSES.index("skin"), 0)
        parts = []
        for name, brow, eye in BROWS:
            line = pts[:, brow]
            below = line + BROW_THICKNESS * (pts[:, eye].mean(1, keepdim=True) - line.mean(1, keepdim=True))
            parts.append((name, torch.cat([line, below.flip(1)], dim=1)))
        parts += [(name, pts[:, list(indices)]) for name, indices in PART_POLYGONS]
        for name, polygon in parts:  # a few fixed parts, each drawn for the whole batch
            labels = torch.where(inside_polygon(polygon, size), CELEBAMASK_CLASSES.index(name), labels)
        return labels.long()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits B x 19 x S x S (CELEBAMASK_CLASSES order): 0 for the drawn class, -1e4 elsewhere."""
        points = dlib_landmarks(self.landmarks, images, self.box).to(torch.float32)
        labels = self.labels_from_points(points, images.shape[-1])
        one_hot = torch.zeros(len(labels), len(CELEBAMASK_CLASSES), *labels.shape[1:], device=images.device,
                              dtype=images.dtype if images.is_floating_point() else torch.float32)
        return one_hot.scatter_(1, labels[:, None], 1.0).sub_(1.0).mul_(LOGIT)

    def extra_repr(self) -> str:
        return f"name={self.name}, forehead={self.forehead}, {self.weights}"

    @classmethod
    def build(cls, weights_dir: str | None = None, path: str | None = None, box: Sequence[float] = DLIB_FACE_BOX,
              forehead: float = 0.0, **kwargs) -> LandmarkHullParser:
        """kwargs: groups, rest, name."""
        return cls(DlibLandmarks.build(points=68, path=path, weights_dir=weights_dir), box, forehead, **kwargs)
