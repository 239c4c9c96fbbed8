"""Crop boxes inside the canonical aligned crop: every expert cuts its own alignment out of one crop."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Where dlib's HOG detector puts the face box (x1, y1, x2, y2 fractions) in the canonical FaceShifter-256 crop,
# measured on the aligned astronaut (46, 81, 202, 237 px): dlib's 68-point predictor runs on this box, no detection.
DLIB_FACE_BOX = (0.18, 0.32, 0.79, 0.93)


def check_box(box: Sequence[float]) -> tuple[float, ...]:
    """A crop box in fractions of the side: (lo, hi) for the square [lo, hi]^2 or (left, top, right, bottom)."""
    box = tuple(float(v) for v in box)
    pairs = [box] if len(box) == 2 else [(box[0], box[2]), (box[1], box[3])] if len(box) == 4 else []
    if not pairs or not all(0.0 <= lo < hi <= 1.0 for lo, hi in pairs):
        raise ValueError(f"crop box must be (lo, hi) or (left, top, right, bottom) fractions in [0, 1], got {box}")
    return box


def crop_box(images: torch.Tensor, box: Sequence[float], size: int | None = None) -> torch.Tensor:
    """Cut `box` (see `check_box`) out of B x C x H x W crops and resize it to size x size (a rectangle is
    squashed to the square, as MTCNN-box crops are).

    The canonical expert input is an aligned face crop, RGB in [-1, 1], B x 3 x S x S; `box` is where the
    expert's own alignment lies inside that crop (e.g. (19/256, 237/256) for ArcFace 112 inside the
    FaceShifter 256 crop), so callers never re-align for each expert.
    """
    box = check_box(box)
    left, top, right, bottom = (box[0], box[0], box[1], box[1]) if len(box) == 2 else box
    h, w = images.shape[-2:]
    faces = images[..., round(top * h):round(bottom * h), round(left * w):round(right * w)]
    if size is not None and faces.shape[-2:] != (size, size):
        # antialiased resizing has no low-precision CPU kernel; resize in float32 there
        work = faces.float() if faces.device.type == "cpu" and faces.dtype != torch.float64 else faces
        work = F.interpolate(work, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        faces = work.to(faces.dtype)
    return faces
