"""Alignment templates: where a face's five landmarks go in each crop convention, and exact conversion
between crops of any two conventions.

Every template is described by its five reference points (ArcFace order: left eye, right eye, nose tip,
left mouth corner, right mouth corner; "left" = the viewer's left) in pixels of a size x size crop, pixel
centres at integer coordinates (the InsightFace / OpenCV convention). Aligning a face is a 2 x 3
similarity transform from the image to the crop:

- `similarity` templates: least-squares fit of the detected five points to the reference points
  (InsightFace `norm_crop`, TreB1eN's MTCNN aligner, FaceShifter's enlarged ArcFace crop).
- `ffhq` templates: the FFHQ recipe (Karras et al. 2019): an oriented square from the eye centres and
  mouth corners. Its reference points are where the recipe puts the ArcFace mean face.
- `affine68` templates: a full least-squares affine fit of the 68 iBUG landmarks to 68 reference points (Fast
  Face-swap's frontal reference, Korshunova et al. 2017); they need 68 landmarks. Their five points are the
  reference's (eye centres, nose tip, mouth corners), used to convert their crops to other templates.

Conversion between two templates is one similarity transform (`conversion_matrix`). Least-squares fits
commute with similarities of the destination, so between `similarity` templates it is exact for every
face. A crop made by the FFHQ recipe depends on the face's proportions: the fixed conversion is exact for
the mean face only, and `conversion_matrix(..., landmarks=...)` gives the exact per-face transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from swaplab.faces.landmarks import five_points

# InsightFace's 5-point template for 112 x 112 ArcFace crops.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
# FaceShifter's crop: the ArcFace template scaled by 1/0.85 about the centre into the crop, i.e. ArcFace's
# 112 square is the box (0.075, 0.925) of the crop; at 256 the identity input is crop[19:237] resized to 112.
FACESHIFTER_BOX = (0.075, 0.925)
CANONICAL = "faceshifter_256"  # the crops experts expect (each cuts its own box out of it)
FRONTAL = "frontal68_256"  # Fast Face-swap's crops
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
METHODS = ("similarity", "ffhq", "affine68")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 least-squares similarity (rotation, uniform scale, translation) mapping points src -> dst
    (Umeyama's closed form, no reflection). Batched: src N x K x 2 gives N x 2 x 3."""
    src = np.asarray(src, np.float64)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    mu_s, mu_d = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(np.swapaxes(d, -1, -2) @ s / src.shape[-2])
    sign = np.sign(np.linalg.det(u @ vt))
    flip = np.stack([np.ones_like(sign), sign], -1)
    rot = u @ (flip[..., :, None] * vt)
    scale = (sig * flip).sum(-1) / (s**2).sum(-1).mean(-1)
    linear = scale[..., None, None] * rot
    shift = mu_d[..., 0, :] - (linear @ mu_s[..., 0, :, None])[..., 0]
    return np.concatenate([linear, shift[..., None]], -1)


def affine_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """N x 2 x 3 least-squares affine maps of N x K x 2 points `src` onto K x 2 points `dst`."""
    src = np.asarray(src, np.float64)
    design = np.concatenate([src, np.ones_like(src[..., :1])], -1)  # N x K x 3
    normal = np.swapaxes(design, -1, -2)
    return np.swapaxes(np.linalg.solve(normal @ design, normal @ np.asarray(dst, np.float64)), -1, -2)


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square (... x 4 x 2 corners: top-left, bottom-left, bottom-right, top-right) from five
    or 68 landmarks; with 68 the eye centres are the means of the eye contours, as in the FFHQ script."""
    p = five_points(landmarks)
    eye_left, eye_right, mouth = p[..., 0, :], p[..., 1, :], (p[..., 3, :] + p[..., 4, :]) / 2
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye, eye_to_mouth = eye_right - eye_left, mouth - eye_avg
    x = eye_to_eye - np.stack([-eye_to_mouth[..., 1], eye_to_mouth[..., 0]], -1)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    half = np.maximum(np.linalg.norm(eye_to_eye, axis=-1) * 2.0, np.linalg.norm(eye_to_mouth, axis=-1) * 1.8)
    x = x * half[..., None]
    y = np.stack([-x[..., 1], x[..., 0]], -1)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y], -2)


@dataclass(frozen=True)
class Template:
    """A crop convention: five reference points in a size x size crop and how faces are fitted to it."""

    name: str
    size: int
    points: np.ndarray = field(repr=False)  # 5 x 2, ArcFace order, crop pixels
    method: str = "similarity"  # "similarity" (least squares on 5 points), "ffhq" (the FFHQ quad recipe) or
    #                             "affine68" (least-squares affine of 68 landmarks onto `reference`)
    description: str = ""
    reference: np.ndarray | None = field(default=None, repr=False)  # affine68: 68 x 2 crop pixels

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"template method must be one of {METHODS}, got {self.method!r}")
        if self.size < 8:
            raise ValueError(f"template size must be >= 8, got {self.size}")
        if (self.method == "affine68") != (self.reference is not None and np.shape(self.reference) == (68, 2)):
            raise ValueError(f"template {self.name}: a 68 x 2 reference goes with method 'affine68' (and only there)")

    @property
    def landmarks(self) -> int:
        """The landmarks a face needs to be aligned to this template: 5 (ArcFace order) or 68 (iBUG)."""
        return 68 if self.method == "affine68" else 5

    def at(self, size: int) -> Template:
        """The same crop at another resolution. Points scale like InsightFace's `ratio` scaling; the FFHQ
        recipe and the frontal reference are fractions of the crop, so their points scale about the pixel
        corners."""
        if size == self.size:
            return self
        k = size / self.size
        if self.method == "similarity":
            return replace(self, size=int(size), points=self.points * k)
        reference = None if self.reference is None else (self.reference + 0.5) * k - 0.5
        return replace(self, size=int(size), points=(self.points + 0.5) * k - 0.5, reference=reference)

    def matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """Image -> crop transforms (N x 2 x 3, or 2 x 3 for one face) from N x 5 x 2 or N x 68 x 2 landmarks
        (affine68 templates: 68 only)."""
        landmarks = np.asarray(landmarks, np.float64)
        if self.method == "similarity":
            return similarity_transform(five_points(landmarks), self.points)
        if self.method == "affine68":
            if landmarks.shape[-2:] != (68, 2):
                raise ValueError(f"template {self.name} aligns faces by 68 landmarks, got shape {landmarks.shape} "
                                 f"(use a 68-point landmark model, e.g. dlib's)")
            return affine_transform(landmarks, self.reference)
        s = self.size
        corners = np.array([[0, 0], [0, s], [s, s], [s, 0]], np.float64) - 0.5  # quad corners = crop corners
        return similarity_transform(ffhq_quad(landmarks), corners)

    def crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """N x size x size x 3 uint8 crops of one H x W x 3 uint8 image, one per face in `landmarks`."""
        matrices = self.matrix(np.asarray(landmarks).reshape(-1, *np.shape(landmarks)[-2:]))
        return np.stack([warp_image(image, m, self.size) for m in matrices]) if len(matrices) else \
            np.zeros((0, self.size, self.size, 3), np.uint8)


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """cv2 affine warp of a uint8 image into size x size; large reductions first shrink the image by an
    integer factor with area averaging, so FFHQ-style crops of big frames are not aliased."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor > 1:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(w // factor, 1), max(h // factor, 1)), interpolation=cv2.INTER_AREA)
        # pixel centre i of the small image sits at factor * i + (factor - 1) / 2 of the full one
        lift = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1]], np.float64)
        matrix, image = (np.vstack([matrix, [0, 0, 1]]) @ lift)[:2], small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def arcface_template(size: int = 256, box: tuple[float, float] = FACESHIFTER_BOX) -> np.ndarray:
    """The 5 ArcFace template points (5 x 2, pixels) in a size x size crop whose ArcFace-112 square is `box`."""
    lo, hi = box
    return (lo + ARCFACE_112 / 112.0 * (hi - lo)) * size


def _ffhq_points(size: int) -> np.ndarray:
    """Where the FFHQ recipe puts the ArcFace mean face in a size x size crop."""
    return np.asarray(Template("ffhq", size, ARCFACE_112, "ffhq").matrix(ARCFACE_112)) @ np.vstack(
        [ARCFACE_112.T, np.ones(5)])


TEMPLATES: dict[str, Template] = {}


def register_template(template: Template) -> Template:
    TEMPLATES[template.name] = template
    return template


for _t in (
    Template("arcface_112", 112, ARCFACE_112, description="InsightFace ArcFace input (norm_crop, 112 x 112)"),
    Template("arcface_128", 128, ARCFACE_112 + [8.0, 0.0],
             description="InsightFace norm_crop at 128: the 112 template shifted 8 px right (no scaling)"),
    Template(CANONICAL, 256, arcface_template(256, FACESHIFTER_BOX),
             description="FaceShifter / swaplab canonical: ArcFace template scaled 1/0.85 into the crop"),
    Template("mtcnn_512", 512, ARCFACE_112 * (512 / 112),
             description="MTCNN aligner (TreB1eN get_reference_facial_points, default_square) scaled to 512"),
    *(Template(f"ffhq_{s}", s, _ffhq_points(s).T, "ffhq", description=f"FFHQ / CelebA-HQ recipe at {s}")
      for s in (256, 512, 1024)),
    Template(FRONTAL, 256, five_points(FRONTAL_68 * 256 - 0.5), "affine68", reference=FRONTAL_68 * 256 - 0.5,
             description="Fast Face-swap: least-squares affine of the 68 landmarks onto the frontal reference"),
):
    register_template(_t)


def get_template(name: str | Template, size: int | None = None) -> Template:
    """A registered template by name, optionally at another resolution (`size`)."""
    if isinstance(name, Template):
        template = name
    elif name in TEMPLATES:
        template = TEMPLATES[name]
    else:
        raise ValueError(f"unknown alignment template {name!r}; known: {sorted(TEMPLATES)}")
    return template if size is None else template.at(size)


def conversion_matrix(source: str | Template, target: str | Template,
                      landmarks: np.ndarray | None = None) -> np.ndarray:
    """2 x 3 transform from `source` crop pixels to `target` crop pixels. With `landmarks` (N x 5|68 x 2, in
    source-crop pixels) the transform is the target's own fit of those landmarks (N x 2 x 3): exact per face
    also for FFHQ-recipe targets."""
    source, target = get_template(source), get_template(target)
    if landmarks is not None:
        return target.matrix(landmarks)
    return similarity_transform(source.points, target.points)


def convert_crops(crops: torch.Tensor, source: str | Template, target: str | Template,
                  landmarks: np.ndarray | None = None, padding_mode: str = "reflection",
                  mode: str = "bilinear") -> torch.Tensor:
    """Re-crop B x C x H x W crops made with `source` (at H = W) into `target` crops at the target's size, in
    one batched warp on the crops' device. `source` / `target` may be Templates at any size."""
    import kornia  # kornia (slow to import): only for batched warps of tensors

    if crops.shape[-1] != crops.shape[-2]:
        raise ValueError(f"crops must be square, got {tuple(crops.shape[-2:])}")
    source, target = get_template(source, crops.shape[-1]), get_template(target)
    matrix = np.broadcast_to(conversion_matrix(source, target, landmarks), (crops.shape[0], 2, 3))
    work = crops if crops.is_floating_point() else crops.float()
    if work.dtype in (torch.float16, torch.bfloat16) and work.device.type == "cpu":
        work = work.float()
    m = torch.as_tensor(np.array(matrix), dtype=work.dtype, device=crops.device)
    out = kornia.geometry.transform.warp_affine(work, m, (target.size, target.size), mode=mode,
                                                padding_mode=padding_mode, align_corners=True)
    return out.to(crops.dtype) if crops.is_floating_point() else out.round().clamp(0, 255).to(crops.dtype)


def align_faces(image: np.ndarray, landmarks: np.ndarray, size: int = 256, template: str = CANONICAL) -> torch.Tensor:
    """Aligned crops (N x 3 x size x size RGB in [-1, 1], `template` at `size`; default the canonical crop
    every expert takes) of the faces whose 5 (ArcFace order) or 68 points are given (N x K x 2)."""
    crops = get_template(template, size).crop(image, landmarks)
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
