"""Detection batches -> aligned face crops, manifest fields and (optionally) parsing labels, and the per-input
bookkeeping (`Unit`) the crops collect in until the input is written.

Parsing labels: the parser expects canonical (faceshifter_256) crops, so each face is also cut from the full
image with the canonical template's matrix (no border padding inside the face context), parsed, and the
label map is warped into the stored crop with the composite matrix (stored <- image <- canonical) by
nearest sampling; pixels outside the canonical crop are background.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from swaplab.faces.landmarks import five_points
from swaplab.faces.templates import CANONICAL, Template, get_template, warp_image
from swaplab.preprocessing.options import PreprocessOptions

NO_FACE = "no face detected"
LOW_SCORE, SMALL_FACE = "face below min_score", "face below min_face_size"


@dataclass
class Unit:
    """One input (an image or a video) on its way through a run."""

    source: str
    identity: str | None
    reason: str | None = None
    received: bool = False  # its last item has arrived
    pending: int = 0  # its frames waiting for detection
    frames: int = 0
    frames_without_face: int = 0
    rejected: Counter = field(default_factory=Counter)  # why detected faces were dropped
    faces: list[dict[str, Any]] = field(default_factory=list)  # crop, manifest row, labels, frame

    def status(self) -> str:
        if self.reason:
            return self.reason
        if self.faces:
            return "ok"
        return self.rejected.most_common(1)[0][0] if self.rejected else NO_FACE

    @property
    def ready(self) -> bool:
        """Every item decoded and every frame through detection: the unit can be written."""
        return self.received and self.pending == 0


class FaceExtractor:
    """Detection batches -> aligned crops, manifest fields and (optionally) parsing labels per image."""

    def __init__(self, detector: Any, template: Template, opts: PreprocessOptions, landmarks: Any = None,
                 parser: Any = None) -> None:
        if opts.landmarks == "dlib68" and landmarks is None:
            raise ValueError("landmarks=dlib68 needs the landmarks expert (experts.landmarks)")
        if opts.parsing and parser is None:
            raise ValueError("parsing=true needs the parsing expert (experts.parsing)")
        self.detector, self.template, self.opts = detector, template, opts
        self.landmarks = landmarks if opts.landmarks == "dlib68" else None
        self.parser = parser if opts.parsing else None
        self.canonical = get_template(CANONICAL)

    def select(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Indices of the faces kept, or none and why."""
        if len(boxes) == 0:
            return np.zeros(0, int), NO_FACE
        ok_score = scores >= self.opts.min_score
        ok_size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.opts.min_face_size
        keep = np.flatnonzero(ok_score & ok_size)
        if len(keep) == 0:
            return keep, LOW_SCORE if not ok_score.any() else SMALL_FACE
        if self.opts.faces == "largest":
            area = np.prod(boxes[keep, 2:] - boxes[keep, :2], axis=1)
            keep = keep[[int(np.argmax(area))]]
        return keep, None

    def __call__(self, images: list[np.ndarray]) -> list[tuple[list[dict[str, Any]], str | None]]:
        """Per image: (faces as dicts with crop, labels and manifest fields, reason when there is none).
        One detector call for the whole batch and one parser call for every face in it; dlib's 68-point
        predictor works on one image (all its faces) at a time."""
        detections = self.detector(images) if images else []
        out, canonical = [], []
        for image, det in zip(images, detections, strict=True):
            keep, reason = self.select(np.asarray(det.boxes), np.asarray(det.scores))
            if len(keep) == 0:
                out.append(([], reason))
                continue
            # rounded as the manifest keeps them, so stored matrices are exactly the fits of stored landmarks
            boxes, points = np.asarray(det.boxes)[keep], np.asarray(det.landmarks, np.float64)[keep].round(3)
            marks68 = None
            if self.landmarks is not None:
                marks68 = np.asarray(self.landmarks(image, boxes), np.float64).round(3)
                points = five_points(marks68).round(3)
            matrices = self.template.matrix(points if marks68 is None else marks68)
            faces = []
            for k, m in enumerate(matrices):
                row = {"face": k, "box": [round(float(v), 2) for v in boxes[k]],
                       "landmarks": points[k].tolist(), "score": round(float(det.scores[keep[k]]), 5),
                       "template": self.template.name, "matrix": m.tolist()}
                if marks68 is not None:
                    row["landmarks68"] = marks68[k].tolist()
                faces.append({"crop": warp_image(image, m, self.template.size), "row": row, "labels": None})
                if self.parser is not None:
                    c = self.canonical.matrix(points[k])
                    canonical.append((faces[-1], c, warp_image(image, c, self.canonical.size)))
            out.append((faces, None))
        if canonical:
            self._parse(canonical)
        return out

    def _parse(self, work: list[tuple[dict[str, Any], np.ndarray, np.ndarray]]) -> None:
        crops = torch.from_numpy(np.stack([w[2] for w in work])).to(self.parser.device)
        with torch.inference_mode():
            labels = self.parser.labels(crops.permute(0, 3, 1, 2).float() / 127.5 - 1).to("cpu", torch.uint8)
        size = self.template.size
        for (face, canonical_m, _), label in zip(work, labels.numpy(), strict=True):
            stored_m = np.array(face["row"]["matrix"])
            # stored crop <- image <- canonical crop
            composite = (np.vstack([stored_m, [0, 0, 1]]) @ np.linalg.inv(np.vstack([canonical_m, [0, 0, 1]])))[:2]
            face["labels"] = cv2.warpAffine(label, composite, (size, size), flags=cv2.INTER_NEAREST,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
