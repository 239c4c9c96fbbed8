"""`FaceSwapPipeline`: detect -> align -> swap -> mask -> colour-correct -> blend -> paste back, for any method.

    pipe = FaceSwapPipeline.from_checkpoint("last.ckpt", mask="parsing", blend="poisson")
    out = pipe(source_photo, target_photo)      # uint8 H x W x 3 RGB arrays (or a batch of equal-size frames)
    out.swap                                    # B x 3 x H x W in [-1, 1]; out.extras["faces"]: faces swapped

Every network call is batched over all faces of all frames given; per-frame Python work is limited to the
detector's box lists. Fast Face-swap needs no source (its identity is in the network); FSGAN runs its stages
inside the model's `generate`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from swaplab.experts.detection import Detections
from swaplab.faces.templates import Template, get_template
from swaplab.imaging import from_uint8, to_uint8
from swaplab.models.base import SwapOutput
from swaplab.models.loading import build_missing_experts, load_swap_model
from swaplab.pipelines.blend import ellipse_mask, feather_mask, match_colour, paste_back

MASKS, BLENDS, SELECTS = ("ellipse", "parsing", "learned"), ("alpha", "poisson"), ("largest", "all", "index",
                                                                                  "reference")


class NoFaceError(ValueError):
    """An image in which the detector found no face (where one is needed)."""


@dataclass
class SwapOptions:
    """How faces are chosen and blended; every value is checked when the pipeline is built."""

    mask: str = "ellipse"       # "ellipse" (soft, from the template), "parsing" (the parser's face region),
    #                             "learned" (the method's own mask, e.g. HifiFace's M_r; ellipse if it has none)
    blend: str = "alpha"        # "alpha" (feathered mask) or "poisson" (OpenCV seamless cloning)
    colour: bool = True         # match the swapped face's colour statistics to the target face
    select: str = "largest"     # "largest", "all", "index" (faces ordered left to right), "reference"
    index: int = 0              # with select=index
    # Which detections count as faces (the rest are rejected and counted by reason): hands, textures and faces in
    # reflections or on screens are often found too, with lower scores or much smaller boxes than the real faces.
    min_score: float = 0.95     # detector score below which a box is rejected (MTCNN: face probability)
    min_face_of_image: float = 0.03   # a face's shorter box side below this fraction of the image's shorter side
    min_face_of_largest: float = 0.3  # ... or below this fraction of the largest confident face's in its frame
    feather: float = 0.02       # Gaussian softening of the mask, fraction of the crop side
    batch_size: int = 16        # faces per generator call

    def __post_init__(self) -> None:
        problems = [f"{name} must be one of {choices}, got {getattr(self, name)!r}"
                    for name, choices in (("mask", MASKS), ("blend", BLENDS), ("select", SELECTS))
                    if getattr(self, name) not in choices]
        if self.index < 0 or self.batch_size < 1 or not 0 <= self.feather < 0.5:
            problems.append(f"need index >= 0, batch_size >= 1, 0 <= feather < 0.5 (got {self.index}, "
                            f"{self.batch_size}, {self.feather})")
        if not (0 <= self.min_face_of_image < 1 and 0 <= self.min_face_of_largest <= 1):
            problems.append(f"need 0 <= min_face_of_image < 1 and 0 <= min_face_of_largest <= 1 (got "
                            f"{self.min_face_of_image}, {self.min_face_of_largest})")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class FaceCounts:
    """Faces the detector found, those swapped, and the others by reason (summed over frames)."""

    found: int = 0
    swapped: int = 0
    rejected: Counter = field(default_factory=Counter)

    def __iadd__(self, other: FaceCounts) -> FaceCounts:
        self.found, self.swapped = self.found + other.found, self.swapped + other.swapped
        self.rejected.update(other.rejected)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"faces_found": self.found, "faces_swapped": self.swapped, "faces_rejected": dict(self.rejected)}


@dataclass
class SourceViews:
    """Several aligned crops of the source person (a folder or video of them) with their view map: a method
    with face view interpolation (FSGAN's `swap_views`) blends, for each target, the reenactments of the views
    around its pose instead of reenacting one photo."""

    views: torch.Tensor  # N x 3 x S x S aligned crops in [-1, 1]
    view_map: Any  # the model's map of the views' angles (FSGAN: ViewMap over (yaw, pitch))

    def to(self, device: str | torch.device) -> SourceViews:
        return SourceViews(self.views.to(device), self.view_map)


def as_frames(images: Any) -> np.ndarray:
    """B x H x W x 3 uint8 from one H x W x 3 uint8 image, a list of equal-size ones or a B x H x W x 3 array."""
    frames = np.asarray(images[None] if isinstance(images, np.ndarray) and images.ndim == 3 else images)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"images must be uint8 H x W x 3 RGB (or a batch of equal-size ones), got "
                         f"{frames.dtype} {frames.shape}")
    return frames


class FaceSwapPipeline:
    """Swaps faces in full photos and frames with a trained swaplab model (any of the four methods)."""

    def __init__(self, model: Any, detector: Any, template: Template, options: SwapOptions | None = None,
                 parser: Any = None, identity: Any = None, use_ema: bool = True, landmarks: Any = None) -> None:
        self.model, self.detector, self.template = model, detector, template
        self.options = options or SwapOptions()
        self.parser, self.identity = parser, identity  # experts for mask=parsing / select=reference
        self.landmarks = landmarks  # 68 points from each face's box, for templates fitted to 68 (Fast Face-swap)
        self.use_ema = use_ema  # False: the raw generator instead of its EMA (where the method keeps one)
        self.uses_source = bool(getattr(model, "uses_source", True))
        self.reference: torch.Tensor | None = None
        if self.options.mask == "parsing" and parser is None:
            raise ValueError("mask=parsing needs a face parser (the experts config's `parsing` role)")
        if self.options.select == "reference" and identity is None:
            raise ValueError("select=reference needs an identity encoder (the experts config's `identity` role)")
        if template.landmarks == 68 and landmarks is None:
            raise ValueError(f"template {template.name} aligns by 68 points: it needs a 68-point landmark model "
                             f"(the experts config's `landmarks` role)")

    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, device: str | torch.device = "cpu", experts: Any = None,
                        use_ema: bool = True, **options: Any) -> FaceSwapPipeline:
        """The model of a swaplab checkpoint with its alignment template and resolution; the detector (and
        parser / identity encoder when the options need them) come from its experts config (or `experts`)."""
        opts = SwapOptions(**options)
        model, cfg = load_swap_model(ckpt, experts)
        template = get_template(cfg.data.template, int(cfg.data.resolution))
        roles = ["detector"] + [r for r, need in (("parsing", opts.mask == "parsing"),
                                                  ("identity", opts.select == "reference"),
                                                  ("landmarks", template.landmarks == 68)) if need]
        built = build_missing_experts(model.experts, roles, cfg.experts, cfg.data.template)
        found = {r: model.experts.get(r) if r in model.experts else built.get(r) for r in roles}
        pipe = cls(model, found["detector"], template, opts, found.get("parsing"), found.get("identity"), use_ema,
                   found.get("landmarks"))
        return pipe.to(device)

    def to(self, device: str | torch.device) -> FaceSwapPipeline:
        self.device = torch.device(device)
        for module in (self.model, self.detector, self.parser, self.identity, self.landmarks):
            if isinstance(module, torch.nn.Module):
                module.to(self.device)
        return self

    # ---- faces -------------------------------------------------------------------------------------------
    def screen(self, found: Detections, image_side: int) -> np.ndarray:
        """Why each detection of one frame is not a face to swap ("" for those that are): the first of a low
        score, a box small beside the image (`image_side`: its shorter side), one small beside the frame's
        largest confident face."""
        opts = self.options
        side = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
        confident = found.scores >= opts.min_score
        largest = side[confident].max(initial=0.0)
        return np.select([~confident, side < opts.min_face_of_image * image_side,
                          side < opts.min_face_of_largest * largest],
                         [f"score below {opts.min_score}", f"smaller than {opts.min_face_of_image} of the image",
                          f"smaller than {opts.min_face_of_largest} of the largest face"], default="")

    def find_faces(self, frames: np.ndarray) -> tuple[list[Detections], FaceCounts]:
        """The faces to swap in each of B x H x W x 3 uint8 frames (see `screen`), and the counts of those
        found and rejected."""
        kept, counts = [], FaceCounts()
        for frame, d in zip(frames, self.detector(list(frames)), strict=True):
            reasons = self.screen(d, min(frames.shape[1:3]))
            keep = reasons == ""
            points = d.landmarks[keep]
            if self.template.landmarks == 68:
                points = self.landmarks(frame, d.boxes[keep]) if keep.any() else np.zeros((0, 68, 2), np.float32)
            kept.append(Detections(d.boxes[keep], d.scores[keep], points))
            counts.found += len(d)
            counts.rejected.update(reasons[~keep].tolist())
        return kept, counts

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """The faces to swap in each frame (`find_faces` without the counts)."""
        return self.find_faces(frames)[0]

    def faces_to_swap(self, frames_np: np.ndarray, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray,
                                                                                  FaceCounts]:
        """`select`'s faces of the frames (frame index and landmarks of each) and the counts of the faces found,
        swapped and rejected; faces that pass the screening but are not chosen count as rejected too."""
        kept, counts = self.find_faces(frames_np)
        frame_index, landmarks = self.select(kept, frames)
        counts.swapped = len(frame_index)
        not_chosen = sum(map(len, kept)) - counts.swapped
        if not_chosen:
            counts.rejected[f"not chosen by select={self.options.select}"] += not_chosen
        return frame_index, landmarks, counts

    def crops(self, frames: torch.Tensor, frame_index: torch.Tensor, landmarks: np.ndarray) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
        """Aligned crops (N x 3 x S x S) of the faces with N x K x 2 `landmarks` in frames[frame_index], and
        their frame -> crop matrices (N x 2 x 3), in one batched warp."""
        matrices = torch.as_tensor(self.template.matrix(landmarks.reshape(len(landmarks), -1, 2)),
                                   dtype=torch.float32, device=frames.device).reshape(-1, 2, 3)
        crops = kornia.geometry.transform.warp_affine(frames[frame_index], matrices, (self.template.size,) * 2,
                                                      padding_mode="reflection", align_corners=True)
        return crops, matrices

    def set_reference(self, image: np.ndarray) -> None:
        """The face (largest) whose identity select=reference looks for in every frame."""
        self.reference = self._embed(self.face_crop(image))

    def _embed(self, crops: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.identity(crops).float(), dim=-1)

    def select(self, detections: list[Detections], frames: torch.Tensor | None = None) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
        """(frame index per chosen face, N x K x 2 landmarks: the template's 5 or 68), faces in frame order."""
        opts, index, points = self.options, [], []
        none = np.zeros(0, np.int64), np.zeros((0, self.template.landmarks, 2), np.float32)
        if opts.select == "reference":
            if self.reference is None:
                raise ValueError("select=reference: call set_reference(photo) first")
            candidates = [(i, p) for i, d in enumerate(detections) for p in d.landmarks]
            if not candidates:
                return none
            idx = torch.as_tensor([i for i, _ in candidates], device=frames.device)
            crops, _ = self.crops(frames, idx, np.stack([p for _, p in candidates]))
            score = (self._embed(crops) @ self.reference.T)[:, 0].cpu().numpy()
            for i in sorted({i for i, _ in candidates}):
                mine = [k for k, (j, _) in enumerate(candidates) if j == i]
                index.append(i), points.append(candidates[mine[int(np.argmax(score[mine]))]][1])
        else:
            for i, d in enumerate(detections):
                if len(d) == 0:
                    continue
                area = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
                if opts.select == "all":
                    chosen = range(len(d))
                elif opts.select == "largest":
                    chosen = [int(np.argmax(area))]
                else:  # index, counted left to right
                    order = np.argsort(d.boxes[:, 0], kind="stable")
                    chosen = [int(order[opts.index])] if opts.index < len(d) else []
                index += [i] * len(chosen)
                points += [d.landmarks[k] for k in chosen]
        return (np.asarray(index, np.int64), np.stack(points).astype(np.float32)) if points else none

    def face_crop(self, image: np.ndarray) -> torch.Tensor:
        """1 x 3 x S x S aligned crop of the largest face of a photo (NoFaceError when there is none)."""
        frames = as_frames(image)
        (found,), counts = self.find_faces(frames)
        if len(found) == 0:
            raise NoFaceError(f"no face found in the source image (rejected: {dict(counts.rejected) or 'none'})")
        largest = int(np.argmax((found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])))
        tensor = from_uint8(torch.from_numpy(frames)).to(self.device)
        return self.crops(tensor, torch.zeros(1, dtype=torch.long, device=self.device),
                          found.landmarks[largest : largest + 1])[0]

    # ---- swapping ------------------------------------------------------------------------------------------
    def masks(self, out: SwapOutput, crops: torch.Tensor) -> torch.Tensor:
        mode = self.options.mask
        if mode == "learned" and isinstance(out.extras.get("mask"), torch.Tensor):
            mask = out.extras["mask"].float()
        elif mode == "parsing":
            mask = self.parser.masks(crops)["face"].float()  # B x 1 x S x S
        else:
            mask = ellipse_mask(self.template).to(crops).expand(len(crops), -1, -1, -1)
        mask = F.interpolate(mask, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        return feather_mask(mask.clamp(0, 1), self.options.feather)

    def swap_faces(self, frames: torch.Tensor, frame_index: np.ndarray, landmarks: np.ndarray,
                   source: torch.Tensor | SourceViews | None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Swap the given faces of B x 3 x H x W frames ([-1, 1], on the device); returns the frames and the
        crops ({"target_crops", "swap_crops", "masks"})."""
        index = torch.as_tensor(frame_index, dtype=torch.long, device=frames.device)
        if len(index) == 0:
            return frames, {}
        crops, matrices = self.crops(frames, index, landmarks)
        swaps, masks = [], []
        for start in range(0, len(crops), self.options.batch_size):
            target = crops[start : start + self.options.batch_size]
            if isinstance(source, SourceViews):
                generator = self.model.inference_generator if self.use_ema else self.model.generator
                out = self.model.swap_views(source.views, source.view_map, target, generator)
            else:
                src = target if source is None else source.expand(len(target), -1, -1, -1)
                # forward() is the method's whole inference path (e.g. Fast Face-swap's paste-back)
                out = self.model(src, target, use_ema=self.use_ema)
            swaps.append(out.swap.float())
            masks.append(self.masks(out, target))
        swap, mask = torch.cat(swaps), torch.cat(masks)
        if self.options.colour:
            swap = match_colour(swap, crops, mask)
        blended = paste_back(frames, swap, mask, matrices, index, self.options.blend)
        return blended, {"target_crops": crops, "swap_crops": swap, "masks": mask}

    @torch.inference_mode()
    def __call__(self, source: np.ndarray | torch.Tensor | SourceViews | None, target: Any) -> SwapOutput:
        """Swap `source`'s face (a photo, a 1 x 3 x S x S aligned crop, or SourceViews) into `target` (a photo or a batch
        of equal-size frames). extras: `faces` (faces swapped per frame), `frames_without_face`, `face_counts`
        (a FaceCounts: faces found, swapped, rejected by reason)."""
        frames_np = as_frames(target)
        frames = from_uint8(torch.from_numpy(frames_np)).to(self.device)
        src = None
        if self.uses_source:
            if source is None:
                raise ValueError("this method needs a source face image")
            src = (source.to(self.device) if isinstance(source, torch.Tensor | SourceViews)
                   else self.face_crop(source))
        frame_index, landmarks, counts = self.faces_to_swap(frames_np, frames)
        out, crops = self.swap_faces(frames, frame_index, landmarks, src)
        faces = np.bincount(frame_index, minlength=len(frames_np))
        return SwapOutput(out, {"faces": faces, "frames_without_face": int((faces == 0).sum()),
                                "face_counts": counts, **crops})


def to_frames_uint8(out: SwapOutput) -> np.ndarray:
    return to_uint8(out.swap).cpu().numpy()
