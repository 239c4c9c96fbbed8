"""Fast Face-swap's data (Korshunova et al. 2017): faces aligned to a frontal reference by a 68-landmark affine
transform, the style set of one identity, and content pairs aligned the same way.

All images, content and style, are warped so that their 68 iBUG landmarks fit the frontal reference in the
least-squares sense (a full 2 x 3 affine, as in the paper); then neural patches at one location of two
images show the same part of the face, which is what the same-location patch search of the style loss needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from swaplab.data.synthetic import SyntheticSwapDataset
from swaplab.data.synthetic_faces import SyntheticFaces
from swaplab.errors import DataNotFoundError
from swaplab.imaging import from_uint8, to_uint8
from swaplab.io.files import IMAGE_SUFFIXES

# The frontal reference: iBUG-68 points in fractions of the crop side (pixel corners at 0 and 1). It is the
# frontal (zero pose), neutral-expression, mean-shape face of swaplab's procedural renderer averaged over 256
# identities, framed like the canonical crop; real faces are fitted to it just as well by the affine map.
FRONTAL_68 = np.array([
    (0.2492, 0.5085), (0.2558, 0.5607), (0.2688, 0.6102), (0.2884, 0.6574), (0.3034, 0.7122), (0.3290, 0.7706),
    (0.3717, 0.8234), (0.4307, 0.8614), (0.5000, 0.8753), (0.5693, 0.8614), (0.6283, 0.8234), (0.6710, 0.7706),
    (0.6966, 0.7122), (0.7116, 0.6574), (0.7312, 0.6102), (0.7442, 0.5607), (0.7508, 0.5085), (0.3245, 0.4434),
    (0.3570, 0.4331), (0.3895, 0.4279), (0.4220, 0.4280), (0.4545, 0.4332), (0.5455, 0.4332), (0.5780, 0.4280),
    (0.6105, 0.4279), (0.6430, 0.4331), (0.6755, 0.4434), (0.5000, 0.4970), (0.5000, 0.5317), (0.5000, 0.5664),
    (0.5000, 0.6012), (0.4643, 0.6346), (0.4821, 0.6401), (0.5000, 0.6424), (0.5179, 0.6401), (0.5357, 0.6346),
    (0.3440, 0.4972), (0.3778, 0.4727), (0.4142, 0.4726), (0.4480, 0.4968), (0.4142, 0.5122), (0.3778, 0.5123),
    (0.5520, 0.4968), (0.5858, 0.4726), (0.6222, 0.4727), (0.6560, 0.4972), (0.6222, 0.5123), (0.5858, 0.5122),
    (0.4285, 0.7074), (0.4523, 0.6974), (0.4762, 0.6947), (0.5000, 0.6987), (0.5238, 0.6947), (0.5477, 0.6974),
    (0.5715, 0.7074), (0.5477, 0.7211), (0.5238, 0.7248), (0.5000, 0.7258), (0.4762, 0.7248), (0.4523, 0.7211),
    (0.4342, 0.7074), (0.4714, 0.7074), (0.5000, 0.7074), (0.5286, 0.7074), (0.5658, 0.7074), (0.5286, 0.7074),
    (0.5000, 0.7074), (0.4714, 0.7074),
])
DEFAULT_FACE_BOX = (0.2, 0.3, 0.8, 0.95)  # x1, y1, x2, y2 (fractions) of the face in a canonical crop: dlib's box


def frontal_reference(size: int) -> np.ndarray:
    """68 x 2 reference points in pixel coordinates of a size x size crop (pixel centres at integers)."""
    return FRONTAL_68 * size - 0.5


def affine_to_reference(landmarks: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """N x 2 x 3 least-squares affine maps (image pixels -> crop pixels) of N x 68 x 2 landmarks onto the
    frontal reference of a size x size crop."""
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise ValueError(f"expected N x 68 x 2 landmarks, got {points.shape}")
    design = np.concatenate([points, np.ones_like(points[..., :1])], -1)  # N x 68 x 3
    normal = np.swapaxes(design, 1, 2)
    solution = np.linalg.solve(normal @ design, normal @ frontal_reference(size))  # N x 3 x 2
    return np.swapaxes(solution, 1, 2)


def _pixel_to_unit(size: int, dtype: torch.dtype) -> torch.Tensor:
    """3 x 3 map from pixel coordinates to grid_sample's [-1, 1] (align_corners=False)."""
    return torch.tensor([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]], dtype=dtype)


def warp_affine(images: torch.Tensor, matrices: np.ndarray, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Batched affine warp: B x C x H x W -> B x C x size x size, output pixel p = M (input pixel)."""
    m = torch.as_tensor(matrices, dtype=torch.float64)
    full = torch.cat([m, m.new_tensor([0, 0, 1]).expand(len(m), 1, 3)], 1)
    theta = _pixel_to_unit(images.shape[-1], m.dtype) @ torch.linalg.inv(full) @ torch.linalg.inv(
        _pixel_to_unit(size, m.dtype))
    grid = F.affine_grid(theta[:, :2].to(images.device, torch.float32), [len(images), 1, size, size],
                         align_corners=False)
    return F.grid_sample(images.float(), grid, mode=mode, padding_mode="border", align_corners=False)


def align_to_frontal(images: torch.Tensor, landmarks: np.ndarray | torch.Tensor,
                     size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Aligned crops (B x 3 x size x size), their landmarks after the warp (B x 68 x 2) and the affine maps."""
    size = size or images.shape[-1]
    matrices = affine_to_reference(landmarks, size)
    points = np.asarray(landmarks, np.float64)
    moved = points @ np.swapaxes(matrices[:, :, :2], 1, 2) + matrices[:, None, :, 2]
    return warp_affine(images, matrices, size).to(images.dtype), torch.from_numpy(moved).float(), matrices


def detect_landmarks(images: torch.Tensor, landmarks: Any, face_box: Sequence[float] = DEFAULT_FACE_BOX) -> np.ndarray:
    """dlib 68 points (B x 68 x 2) of roughly framed face crops B x 3 x S x S, with the face box `face_box`."""
    side = images.shape[-1]
    box = np.asarray(face_box, np.float64)[None] * side
    return np.stack([landmarks(np.ascontiguousarray(im), box)[0] for im in to_uint8(images).cpu().numpy()])


class SyntheticStyleSet:
    """The style set of procedural identity `identity`: its first `num_images` images, aligned by their
    ground-truth landmarks (poses, expressions and lights vary from image to image)."""

    def __init__(self, identity: int = 0, num_images: int = 32, resolution: int = 64, seed: int = 0,
                 **renderer_kwargs: Any) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.identity, self.num_images, self.resolution = int(identity), int(num_images), int(resolution)
        self.faces = SyntheticFaces(resolution=resolution, seed=seed, **renderer_kwargs)

    def render(self) -> dict[str, torch.Tensor]:
        """Aligned `image`, `landmarks` and (nearest-warped) `mask` of the style images."""
        faces = self.faces(torch.full((self.num_images,), self.identity), torch.arange(self.num_images))
        image, landmarks, matrices = align_to_frontal(faces["image"], faces["landmarks"])
        mask = warp_affine(faces["mask"][:, None].float(), matrices, self.resolution, "nearest")[:, 0].long()
        return {"image": image, "landmarks": landmarks, "mask": mask}

    def load(self) -> torch.Tensor:
        return self.render()["image"]


class FolderStyleSet:
    """The style set from a folder of one person's photos (already cropped around the face): each photo is
    resized to a square, its 68 landmarks found by dlib in `face_box`, and it is aligned to the reference."""

    def __init__(self, root: str | Path, resolution: int = 128, face_box: Sequence[float] = DEFAULT_FACE_BOX,
                 max_images: int | None = None, landmarks: Any = None) -> None:
        self.root, self.resolution = Path(root), int(resolution)
        self.face_box, self.max_images, self._landmarks = tuple(face_box), max_images, landmarks

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            raise DataNotFoundError(f"style folder {self.root} does not exist: put the target person's photos there")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataNotFoundError(f"style folder {self.root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files[: self.max_images]

    def load(self) -> torch.Tensor:
        size, crops = self.resolution * 2, []  # landmarks found at twice the side, then warped down
        for path in self.files():
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DataNotFoundError(f"cannot decode style image {path}")
            crops.append(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA))
        images = from_uint8(torch.from_numpy(np.stack(crops)))
        if self._landmarks is None:
            # importing swaplab.experts loads every expert (~10 s): only when a style set needs landmarks
            from swaplab.experts import DlibLandmarks

            self._landmarks = DlibLandmarks.build(points=68)
        points = detect_landmarks(images, self._landmarks, self.face_box)
        return align_to_frontal(images, points, self.resolution)[0]


class FrontalAlignedPairs(Dataset):
    """A pairs dataset whose `source` / `target` faces are aligned to the frontal reference (with their
    `*_landmarks` and `*_mask` when present). `landmarks`: "ground_truth" (the dataset's own `*_landmarks`,
    e.g. data=synthetic) or "dlib" (the dlib 68 expert on every crop, inside `face_box`; per image on the CPU,
    so it runs in the loader workers)."""

    def __init__(self, dataset: Dataset, landmarks: str = "ground_truth",
                 face_box: Sequence[float] = DEFAULT_FACE_BOX) -> None:
        if landmarks not in ("ground_truth", "dlib"):
            raise ValueError(f"landmarks must be 'ground_truth' or 'dlib', got {landmarks!r}")
        self.dataset, self.landmarks, self.face_box = dataset, landmarks, tuple(face_box)
        self.resolution = getattr(dataset, "resolution", None)
        self._dlib: Any = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _points(self, batch: dict[str, torch.Tensor], side: str) -> np.ndarray:
        if self.landmarks == "ground_truth":
            if f"{side}_landmarks" not in batch:
                raise ValueError(f"the dataset gives no '{side}_landmarks': use landmarks=dlib")
            return batch[f"{side}_landmarks"].numpy()
        if self._dlib is None:
            # importing swaplab.experts loads every expert (~10 s): only when a style set needs landmarks
            from swaplab.experts import DlibLandmarks

            self._dlib = DlibLandmarks.build(points=68)
        return detect_landmarks(batch[side], self._dlib, self.face_box)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = dict(self.dataset.__getitems__(indices))
        for side in ("target", "source"):
            batch[side], moved, matrices = align_to_frontal(batch[side], self._points(batch, side))
            if f"{side}_landmarks" in batch:
                batch[f"{side}_landmarks"] = moved
            if f"{side}_mask" in batch:
                mask = batch[f"{side}_mask"][:, None].float()
                batch[f"{side}_mask"] = warp_affine(mask, matrices, mask.shape[-1], "nearest")[:, 0].long()
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def synthetic_content(resolution: int = 64, **kwargs: Any) -> FrontalAlignedPairs:
    """Procedural content faces aligned by their ground-truth landmarks (kwargs: SyntheticSwapDataset's)."""
    return FrontalAlignedPairs(SyntheticSwapDataset(resolution=resolution, **kwargs))


def style_set(source: str = "synthetic", resolution: int = 64, identity: int = 0, num_images: int | None = 32,
              root: str | Path | None = None, face_box: Sequence[float] = DEFAULT_FACE_BOX,
              seed: int = 0) -> SyntheticStyleSet | FolderStyleSet:
    """A style set from config: `source` "synthetic" (procedural `identity`, `num_images` renders) or "folder"
    (the photos under `root`, at most `num_images` of them; null: all)."""
    if source == "synthetic":
        return SyntheticStyleSet(identity, num_images or 32, resolution, seed)
    if source == "folder":
        if root is None:
            raise ValueError("a folder style set needs model.style_set.root (a folder of one person's photos)")
        return FolderStyleSet(root, resolution, face_box, num_images)
    raise ValueError(f"style_set source must be 'synthetic' or 'folder', got {source!r}")
