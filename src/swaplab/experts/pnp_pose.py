"""Head pose (yaw, pitch, roll) from 68 landmarks by fitting a rigid 3D face, no weights: the offline
default pose estimator.

Model: scaled orthographic projection x_i = s * P R X_i + t of 3D points X_i (P keeps x, y), fitted by
weighted least squares to the landmarks in a y-up frame: the unconstrained affine 2 x 3 solution (as in
POS), projected onto scaled rotations by SVD; optionally refined by batched Gauss-Newton steps on
(rotation, scale), the rotation updated multiplicatively (R <- exp([d]x) R) so it stays a rotation. All
samples are solved at once (no per-sample loops, no cv2.solvePnP). The affine start alone (the default)
proved more forgiving of a face model that does not match the faces: on 96 synthetic faces the mean
absolute yaw / pitch / roll errors were 2.0 / 7.5 / 2.9 degrees without and 2.9 / 8.9 / 3.4 with two
refinement steps (pitch mostly a constant offset: the procedural heads are flatter than real ones, and that
offset leaks into roll at large yaw). With a matching face (`LandmarkPose.calibrate` on 48 of them, tested
on the other 48) they were 0.3 / 2.6 / 0.5 and 0.6 / 1.7 / 0.3.

Pose convention (swaplab.data.synthetic_faces): R = Rz(roll) Rx(pitch) Ry(yaw) maps the head frame (x towards
image right for a frontal face, y up, z towards the camera) to the camera frame; positive yaw turns the face
towards image right, positive pitch tilts it up, positive roll turns the head counter-clockwise in the image.

The default 3D face (`MEAN_FACE_68`, millimetres, origin between the eye centres) is built from average adult
proportions: eye centres 62 mm apart with corners at +-17 / +-45 mm (outer corners 14 mm deeper), brows
20-31 mm above the eye line, nose tip 34 mm below and 42 mm in front of the eye centres, mouth corners 50 mm
apart 67 mm below the eyes and 9 mm in front (the positions of Deep3DFaceRecon's standard 5-point BFM face),
chin 117 mm below the eyes, and the jaw line curving back to 70 mm half-width and 40 mm behind the eyes at
ear level. `build(use_bfm=True)` takes the 68 keypoints of the BFM mean shape instead, and
`LandmarkPose.calibrate` fits the face to landmarks with known poses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from swaplab.experts.bfm import BFM
from swaplab.experts.dlib_models import DlibLandmarks
from swaplab.faces.crop import DLIB_FACE_BOX
from swaplab.imaging import to_uint8

# Subject-right half (image left for a frontal face, x < 0) and midline; the rest is mirrored.
_HALF = {
    0: (-70, -8, -40), 1: (-68, -26, -38), 2: (-65, -44, -35), 3: (-61, -61, -31), 4: (-55, -78, -25),
    5: (-46, -93, -16), 6: (-34, -105, -5), 7: (-18, -114, 6), 8: (0, -117, 12),  # jaw line to the chin
    17: (-54, 20, -16), 18: (-45, 28, -5), 19: (-33, 31, 4), 20: (-21, 30, 10), 21: (-10, 26, 14),  # brow
    27: (0, 2, 16), 28: (0, -10, 24), 29: (0, -22, 33), 30: (0, -34, 42),  # nose bridge to tip
    31: (-15, -39, 20), 32: (-8, -42, 27), 33: (0, -44, 30),  # nostrils, subnasale
    36: (-45, 0, -7), 37: (-36, 4, -1), 38: (-25, 4, 3), 39: (-17, 0, 7), 40: (-25, -4, 3), 41: (-36, -4, -1),
    48: (-25, -67, 9), 49: (-16, -61, 18), 50: (-6, -58, 23), 51: (0, -59, 24),  # outer upper lip
    59: (-16, -74, 16), 58: (-7, -77, 20), 57: (0, -78, 21),  # outer lower lip
    60: (-21, -67, 11), 61: (-8, -66, 19), 62: (0, -66, 21), 67: (-8, -68, 19), 66: (0, -68, 21),  # inner lip
}
_MIRROR = {**{i: 16 - i for i in range(8)}, 17: 26, 18: 25, 19: 24, 20: 23, 21: 22, 31: 35, 32: 34,
           36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46, 48: 54, 49: 53, 50: 52, 59: 55, 58: 56,
           60: 64, 61: 63, 67: 65}


def _mean_face() -> torch.Tensor:
    points = dict(_HALF)
    points.update({j: (-_HALF[i][0], _HALF[i][1], _HALF[i][2]) for i, j in _MIRROR.items()})
    assert sorted(points) == list(range(68))
    return torch.tensor([points[i] for i in range(68)], dtype=torch.float32)


MEAN_FACE_68 = _mean_face()  # (68, 3) mm, x right, y up, z towards the camera


def rotation_from_pose(pose: torch.Tensor) -> torch.Tensor:
    """(B, 3) yaw, pitch, roll degrees -> (B, 3, 3) R = Rz(roll) Rx(pitch) Ry(yaw)."""
    c, s = torch.deg2rad(pose).cos().unbind(-1), torch.deg2rad(pose).sin().unbind(-1)
    one, zero = torch.ones_like(c[0]), torch.zeros_like(c[0])

    def mat(*v: torch.Tensor) -> torch.Tensor:
        return torch.stack(v, -1).reshape(-1, 3, 3)

    ry = mat(c[0], zero, s[0], zero, one, zero, -s[0], zero, c[0])
    rx = mat(one, zero, zero, zero, c[1], s[1], zero, -s[1], c[1])
    rz = mat(c[2], -s[2], zero, s[2], c[2], zero, zero, zero, one)
    return rz @ rx @ ry


def pose_from_rotation(rot: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation -> (B, 3) yaw, pitch, roll degrees (inverse of `rotation_from_pose`)."""
    yaw = torch.atan2(-rot[:, 2, 0], rot[:, 2, 2])
    pitch = torch.asin((-rot[:, 2, 1]).clamp(-1.0, 1.0))
    roll = torch.atan2(-rot[:, 0, 1], rot[:, 1, 1])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], -1))


class LandmarkPose(nn.Module):
    """Yaw, pitch, roll (degrees) of faces from iBUG-68 landmarks (B x 68 x 2 pixels, x right, y down).

    A geometric estimator without parameters (`weights = "none (geometric)"`); angles do not depend on
    the image size, translation or scale of the landmarks.
    """

    def __init__(
        self,
        model_points: torch.Tensor | None = None,  # (68, 3) rigid face, x right, y up, z to camera; any unit
        jaw_weight: float = 0.5,  # weight of the jaw-line points 0-16 (contour points slide on real faces)
        iterations: int = 0,  # Gauss-Newton refinement steps after the affine start (2 converge)
        name: str = "landmark_pnp",
    ) -> None:
        super().__init__()
        points = (MEAN_FACE_68 if model_points is None else torch.as_tensor(model_points)).float().reshape(68, 3)
        weight = torch.ones(68)
        weight[:17] = jaw_weight
        weight = weight / weight.sum()
        points = points - (weight[:, None] * points).sum(0)  # weighted centroid at the origin
        points = points / points.pow(2).sum(-1).mul(weight).sum().sqrt()  # unit weighted RMS radius
        self.register_buffer("model", points, persistent=False)
        self.register_buffer("point_weight", weight, persistent=False)
        self.iterations, self.name, self.weights = int(iterations), name, "none (geometric)"

    @classmethod
    def build(cls, jaw_weight: float = 0.5, iterations: int = 0, bfm_path: str | None = None,
              weights_dir: str | None = None, use_bfm: bool = False) -> LandmarkPose:
        """`use_bfm=True` takes the 68 keypoints of the BFM mean shape (`BFM_model_front.mat`) as the face."""
        points = None
        if use_bfm:
            points = BFM.build(path=bfm_path, weights_dir=weights_dir).mean_landmarks_3d()
        return cls(points, jaw_weight=jaw_weight, iterations=iterations)

    @classmethod
    def calibrate(cls, landmarks: torch.Tensor, poses: torch.Tensor, rounds: int = 30, **kwargs) -> LandmarkPose:
        """An estimator whose face is fitted to landmarks with known poses (B x 68 x 2 pixels, B x 3 degrees,
        e.g. synthetic faces or a pose-labelled data set): alternating least squares on the 3D points and the
        per-image scale and translation under scaled orthographic projection (needs varied yaw and pitch)."""
        q = torch.stack([landmarks[..., 0], -landmarks[..., 1]], -1).float()
        rows = rotation_from_pose(poses.float())[:, :2]  # (B, 2, 3)
        points = MEAN_FACE_68.to(q.device)
        for _ in range(rounds):
            points = points - points.mean(0)
            points = points / points.pow(2).sum(-1).mean().sqrt()
            y = points @ rows.transpose(1, 2)  # (B, 68, 2) rotated, orthographic
            yc, qc = y - y.mean(1, keepdim=True), q - q.mean(1, keepdim=True)
            scale = (yc * qc).sum((1, 2)) / yc.pow(2).sum((1, 2))
            shift = q.mean(1) - scale[:, None] * y.mean(1)
            normal = torch.einsum("b,bki,bkj->ij", scale**2, rows, rows)
            rhs = torch.einsum("b,bki,bnk->ni", scale, rows, q - shift[:, None])
            points = torch.linalg.solve(normal, rhs.T).T
        return cls(points, **kwargs)

    def fit(self, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotation (B, 3, 3), scale (B,) in pixels per model unit and translation (B, 2) pixels (y down) of
        the projected model centre."""
        lm = landmarks.float()
        w, X = self.point_weight.to(lm.device), self.model.to(lm.device)
        q = torch.stack([lm[..., 0], -lm[..., 1]], -1)  # y up
        centre = (w[:, None] * q).sum(1)
        q = q - centre[:, None]
        # Affine start: A = q^T W X (X^T W X)^-1, then the nearest scaled rotation rows.
        wx = w[:, None] * X
        affine = q.transpose(1, 2) @ (wx @ torch.linalg.inv(X.T @ wx))  # (B, 2, 3)
        u, sv, vh = torch.linalg.svd(affine, full_matrices=False)
        rows = u @ vh
        rot = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], 1)
        scale = sv.mean(-1)
        for _ in range(self.iterations):
            y = X @ rot.transpose(1, 2)  # (B, 68, 3) rotated model
            res = scale[:, None, None] * y[..., :2] - q
            sy, zero = scale[:, None, None] * y, torch.zeros_like(y[..., 0])
            jx = torch.stack([zero, sy[..., 2], -sy[..., 1], y[..., 0]], -1)  # d(x, y) / d(rotation, scale)
            jy = torch.stack([-sy[..., 2], zero, sy[..., 0], y[..., 1]], -1)
            jac = torch.stack([jx, jy], 2) * w.sqrt()[None, :, None, None]  # (B, 68, 2, 4)
            jac, res = jac.reshape(-1, 136, 4), (res * w.sqrt()[None, :, None]).reshape(-1, 136)
            hess = jac.transpose(1, 2) @ jac + 1e-6 * torch.eye(4, device=lm.device)
            step = torch.linalg.solve(hess, -(jac.transpose(1, 2) @ res[..., None]))[..., 0]
            d = step[:, :3]
            skew = torch.zeros_like(rot)
            skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -d[:, 2], d[:, 1], -d[:, 0]
            rot = torch.linalg.matrix_exp(skew - skew.transpose(1, 2)) @ rot
            scale = scale + step[:, 3]
        return rot, scale, torch.stack([centre[:, 0], -centre[:, 1]], -1)

    def forward(self, landmarks: torch.Tensor, image_size: int | None = None) -> torch.Tensor:
        """(B, 68, 2) landmarks -> (B, 3) yaw, pitch, roll in degrees. `image_size` is accepted for the common
        pose-estimator interface; the scaled-orthographic fit does not need it."""
        if landmarks.dim() != 3 or landmarks.shape[1:] != (68, 2):
            raise ValueError(f"expected landmarks of shape (B, 68, 2), got {tuple(landmarks.shape)}")
        with torch.no_grad():
            rot = self.fit(landmarks)[0]
        return pose_from_rotation(rot).to(landmarks.dtype if landmarks.is_floating_point() else torch.float32)

    def extra_repr(self) -> str:
        return f"name={self.name}, weights={self.weights}, iterations={self.iterations}"



class CropLandmarkPose(nn.Module):
    """Head pose of canonical aligned crops (B x 3 x S x S RGB in [-1, 1]) -> B x 3 (yaw, pitch, roll) degrees,
    from dlib's 68 landmarks and the PnP fit: the offline `pose` expert, with Hopenet's `HeadPose` interface.

    `box` (x1, y1, x2, y2 fractions of the crop) is where dlib's HOG detector puts the face box in the
    canonical ArcFace-256 crop (measured on the aligned astronaut: 46, 81, 202, 237 px), so no detection runs.
    dlib is a per-image C++ API: the landmark step loops over the batch on the CPU.
    """

    def __init__(self, landmarks: nn.Module, pnp: LandmarkPose,
                 box: tuple[float, float, float, float] = DLIB_FACE_BOX) -> None:
        super().__init__()
        self.landmarks, self.pnp, self.box = landmarks, pnp, tuple(float(v) for v in box)
        self.name = f"{pnp.name}+{landmarks.name}"
        self.weights = landmarks.weights

    def landmarks68(self, images: torch.Tensor) -> torch.Tensor:
        """B x 68 x 2 landmarks in the crops' pixels."""
        frames = to_uint8(images).cpu().numpy()
        box = np.asarray([self.box], np.float32) * images.shape[-1]
        points = np.stack([self.landmarks(np.ascontiguousarray(f), box)[0] for f in frames])
        return torch.from_numpy(points).to(images.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pnp(self.landmarks68(images)).to(images.dtype)

    @classmethod
    def build(cls, box: tuple[float, float, float, float] = DLIB_FACE_BOX, path: str | None = None,
              weights_dir: str | None = None, **pnp_kwargs) -> CropLandmarkPose:
        landmarks = DlibLandmarks.build(points=68, path=path, weights_dir=weights_dir)
        return cls(landmarks, LandmarkPose.build(weights_dir=weights_dir, **pnp_kwargs), box)
