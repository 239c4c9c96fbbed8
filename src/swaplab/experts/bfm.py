"""Basel Face Model 2009 as Deep3DFaceRecon_pytorch uses it (`BFM_model_front.mat`): a differentiable,
batched shape model with their rotation, camera and 68-landmark projection.

Coordinates: model x towards image right (for a frontal face), y up, z towards the camera, in decimetres
(their 1e5 rescaling of BFM09's micrometres). Camera: pinhole at z = `camera_distance` (10) looking down -z,
focal 1015 px, principal point (112, 112) in a 224 x 224 crop. Landmarks come out as pixel (x, y), y down,
as their `save_coeff` writes them: y = 2 * center - 1 - v, so the optical axis hits (112, 111).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swaplab.experts.registry import WeightEntry, register_weights, resolve_weights

N_ID, N_EXP, N_TEX, N_ANGLE, N_GAMMA, N_TRANS = 80, 64, 80, 3, 27, 3
N_COEFFS = N_ID + N_EXP + N_TEX + N_ANGLE + N_GAMMA + N_TRANS  # 257

register_weights(WeightEntry(
    key="bfm_front",
    filename="BFM_model_front.mat",
    source="build it with Deep3DFaceRecon_pytorch (github.com/sicxu/Deep3DFaceRecon_pytorch, README 'Prepare "
           "prerequisite models'): 01_MorphableModel.mat from the Basel Face Model 2009 site "
           "(faces.dmi.unibas.ch/bfm, registration required) + Exp_Pca.bin from Guo et al. (github.com/Juyong/3DFace) "
           "in BFM/, converted by util/load_mats.py transferBFM09",
    format="MATLAB .mat: meanshape 1x3N, idBase 3Nx80, exBase 3Nx64, meantex 1x3N, texBase 3Nx80, tri Fx3, "
           "point_buf Nx8, keypoints 68 (1-based), frontmask2_idx, skinmask, tri_mask2 (N = 35709 vertices, dm)",
))


@dataclass
class FaceCoefficients:
    """Deep3DFaceRecon's 257 coefficients, split. Angles are radians about the model's x, y, z axes
    (their rotation Rz Ry Rx, see `BFM.rotation`); trans is in decimetres (camera at z = 10)."""

    id: torch.Tensor  # (B, 80) identity (shape) coefficients
    exp: torch.Tensor  # (B, 64) expression coefficients
    tex: torch.Tensor  # (B, 80) albedo coefficients
    angle: torch.Tensor  # (B, 3) rotation angles, radians
    gamma: torch.Tensor  # (B, 27) spherical-harmonics lighting, 3 colours x 9
    trans: torch.Tensor  # (B, 3) translation (x, y, z)

    @classmethod
    def from_vector(cls, coeffs: torch.Tensor) -> FaceCoefficients:
        if coeffs.shape[-1] != N_COEFFS:
            raise ValueError(f"expected {N_COEFFS} coefficients, got {coeffs.shape[-1]}")
        sizes = (N_ID, N_EXP, N_TEX, N_ANGLE, N_GAMMA, N_TRANS)
        return cls(*torch.split(coeffs, sizes, dim=-1))

    def to_vector(self) -> torch.Tensor:
        return torch.cat([getattr(self, f.name) for f in fields(self)], dim=-1)

    @classmethod
    def fuse(cls, source: FaceCoefficients, target: FaceCoefficients) -> FaceCoefficients:
        """HifiFace's fused face: identity (shape) from `source`, everything else from `target`."""
        return cls(source.id, target.exp, target.tex, target.angle, target.gamma, target.trans)

    @classmethod
    def zeros(cls, batch: int = 1, device: torch.device | str | None = None) -> FaceCoefficients:
        return cls.from_vector(torch.zeros(batch, N_COEFFS, device=device))


def shape_distance(landmarks_a: torch.Tensor, landmarks_b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over the 68 points of the L1 distance (pixels) between two (B, 68, 2) landmark sets:
    HifiFace's shape loss term (Wang et al. 2021, Eq. 3: all projected landmarks)."""
    return (landmarks_a - landmarks_b).abs().sum(-1).mean(-1)


class BFM(nn.Module):
    """Shape part of the BFM: shape = mean + idBase @ id + exBase @ exp (mean recentred as in their
    ParametricFaceModel), rigid transform, perspective projection of the 68 keypoints.

    Buffers are non-persistent: the model moves with `.to()` but never enters a checkpoint. Texture, lighting
    and triangles are kept when present (`mean_tex`, `tex_base`, `tri`) but not rendered here.
    """

    def __init__(
        self,
        mean_shape: torch.Tensor,  # (N, 3) mean vertex positions, dm
        id_base: torch.Tensor,  # (3N, 80) identity basis (xyz interleaved per vertex)
        exp_base: torch.Tensor,  # (3N, 64) expression basis
        keypoints: torch.Tensor,  # (68,) 0-based vertex indices of the iBUG-68 landmarks
        focal: float = 1015.0,  # focal length in pixels of the 224 crop
        center: float = 112.0,  # principal point (both axes); the crop side is 2 * center
        camera_distance: float = 10.0,  # camera position on +z, dm
        recenter: bool = True,  # subtract the mean vertex of the mean shape (their default)
        mean_tex: torch.Tensor | None = None,  # (N, 3) mean albedo, 0-255
        tex_base: torch.Tensor | None = None,  # (3N, 80) albedo basis
        tri: torch.Tensor | None = None,  # (F, 3) 0-based triangle vertex indices
    ) -> None:
        super().__init__()
        mean_shape = torch.as_tensor(mean_shape, dtype=torch.float32).reshape(-1, 3)
        if recenter:
            mean_shape = mean_shape - mean_shape.mean(0, keepdim=True)
        n = mean_shape.shape[0]
        for name, value, cols in (("id_base", id_base, N_ID), ("exp_base", exp_base, N_EXP)):
            value = torch.as_tensor(value, dtype=torch.float32)
            if tuple(value.shape) != (3 * n, cols):
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected ({3 * n}, {cols})")
            self.register_buffer(name, value.reshape(n, 3, -1), persistent=False)
        self.register_buffer("mean_shape", mean_shape, persistent=False)
        keypoints = torch.as_tensor(keypoints, dtype=torch.long).reshape(-1)
        self.register_buffer("keypoints", keypoints, persistent=False)
        for name, value in (("mean_tex", mean_tex), ("tex_base", tex_base), ("tri", tri)):
            self.register_buffer(name, None if value is None else torch.as_tensor(value), persistent=False)
        self.focal, self.center, self.camera_distance = float(focal), float(center), float(camera_distance)

    @classmethod
    def from_mat(cls, path: str | Path, **camera: float) -> BFM:
        """Load `BFM_model_front.mat` (arrays only; scipy never executes code from a .mat)."""
        from scipy.io import loadmat  # scipy: only to read the official BFM .mat file

        m = loadmat(str(path))
        missing = [k for k in ("meanshape", "idBase", "exBase", "keypoints") if k not in m]
        if missing:
            raise KeyError(f"{path} is not a BFM_model_front.mat: missing {missing}")
        optional = {}
        if "meantex" in m and "texBase" in m:
            optional.update(mean_tex=torch.from_numpy(m["meantex"].astype(np.float32).reshape(-1, 3)),
                            tex_base=torch.from_numpy(m["texBase"].astype(np.float32)))
        if "tri" in m:
            optional["tri"] = torch.from_numpy(m["tri"].astype(np.int64) - 1)
        def array(key: str) -> torch.Tensor:
            return torch.from_numpy(m[key].astype(np.float32))

        keypoints = torch.from_numpy(m["keypoints"].astype(np.int64).reshape(-1) - 1)  # stored 1-based
        return cls(array("meanshape"), array("idBase"), array("exBase"), keypoints, **optional, **camera)

    @classmethod
    def build(cls, path: str | None = None, weights_dir: str | None = None, registry_key: str = "bfm_front",
              **camera: float) -> BFM:
        return cls.from_mat(resolve_weights(registry_key, path=path, weights_dir=weights_dir), **camera)

    @classmethod
    def synthetic(cls, n_vertices: int = 200, seed: int = 0, **camera: float) -> BFM:
        """A random stand-in of BFM scale (a ~1.5 dm blob, small bases) for tests and the quickstart."""
        g = torch.Generator().manual_seed(seed)
        mean = torch.randn(n_vertices, 3, generator=g) * torch.tensor([0.6, 0.8, 0.4])
        id_base = torch.randn(3 * n_vertices, N_ID, generator=g) * 0.01
        exp_base = torch.randn(3 * n_vertices, N_EXP, generator=g) * 0.01
        keypoints = torch.randperm(n_vertices, generator=g)[:68]
        return cls(mean, id_base, exp_base, keypoints, **camera)

    def shape(self, id_coeffs: torch.Tensor, exp_coeffs: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) model-space vertices."""
        id_part = torch.einsum("nck,bk->bnc", self.id_base, id_coeffs)
        return self.mean_shape + id_part + torch.einsum("nck,bk->bnc", self.exp_base, exp_coeffs)

    @staticmethod
    def rotation(angles: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3) matrix M = Rz(c) Ry(b) Rx(a) for angles (a, b, c) radians, acting on column vectors
        (their `compute_rotation` returns M^T for row vectors: pts @ M^T)."""
        c, s = angles.cos(), angles.sin()
        one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

        def mat(*rows: torch.Tensor) -> torch.Tensor:
            return torch.stack(rows, -1).reshape(-1, 3, 3)

        rx = mat(one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0])
        ry = mat(c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1])
        rz = mat(c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one)
        return rz @ ry @ rx

    def transform(self, points: torch.Tensor, angles: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """Rotate (B, P, 3) model points and translate them (still model frame, camera on +z)."""
        return points @ self.rotation(angles).transpose(1, 2) + trans[:, None]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) transformed points -> (B, P, 2) pixel (x, y), y down, in the 2 * center crop."""
        depth = self.camera_distance - points[..., 2]
        u = self.focal * points[..., 0] / depth + self.center
        v = self.focal * points[..., 1] / depth + self.center
        return torch.stack([u, 2 * self.center - 1 - v], -1)

    def keypoints_3d(self, coeffs: FaceCoefficients) -> torch.Tensor:
        """(B, 68, 3) transformed landmark vertices (only the 68 rows of the bases are evaluated)."""
        k = self.keypoints
        pts = self.mean_shape[k] + torch.einsum("nck,bk->bnc", self.id_base[k], coeffs.id) \
            + torch.einsum("nck,bk->bnc", self.exp_base[k], coeffs.exp)
        return self.transform(pts, coeffs.angle, coeffs.trans)

    def landmarks(self, coeffs: FaceCoefficients | torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) projected iBUG-68 landmarks in pixels of the 224 crop (x right, y down)."""
        if isinstance(coeffs, torch.Tensor):
            coeffs = FaceCoefficients.from_vector(coeffs)
        return self.project(self.keypoints_3d(coeffs))

    def vertices(self, coeffs: FaceCoefficients) -> torch.Tensor:
        """(B, N, 3) all vertices, rotated and translated (model frame)."""
        return self.transform(self.shape(coeffs.id, coeffs.exp), coeffs.angle, coeffs.trans)

    def mean_landmarks_3d(self) -> torch.Tensor:
        """(68, 3) landmark vertices of the (recentred) mean shape, dm."""
        return self.mean_shape[self.keypoints]

    def extra_repr(self) -> str:
        return (f"vertices={self.mean_shape.shape[0]}, focal={self.focal}, center={self.center}, "
                f"camera_distance={self.camera_distance}")
