"""Face view interpolation (FSGAN): a source seen in many views (frames of a video, a folder of photos) is
reenacted from the views whose head poses surround the target's, and those reenactments are blended.

The views' (yaw, pitch) angles are triangulated (Delaunay); a target's (yaw, pitch) inside a triangle takes its
three barycentric weights over that triangle's views. Outside the views' convex hull, or when fewer than three
views or only collinear ones span no triangle, the nearest view takes the whole weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError

NEGLIGIBLE = 1e-9  # barycentric weights this small are rounding: a target on an edge or a vertex uses fewer views


class ViewMap:
    """The source views' (yaw, pitch) angles in degrees (N x 2; a third column, roll, is ignored) and their
    triangulation; `weights` answers which views to blend, and how, for a target pose."""

    def __init__(self, angles: np.ndarray | torch.Tensor | Sequence[Sequence[float]]) -> None:
        if torch.is_tensor(angles):
            angles = angles.detach().cpu().double().numpy()
        points = np.asarray(angles, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 2:
            raise ValueError(f"view angles must be N x 2 (yaw, pitch) with N >= 1, got shape {points.shape}")
        points = points[:, :2]
        if not np.isfinite(points).all():
            raise ValueError("view angles must be finite")
        self.points = points
        self.triangulation: Delaunay | None = None
        if len(points) >= 3:
            try:
                self.triangulation = Delaunay(points)
            except QhullError:  # all views on one line (or one point): no triangle to interpolate in
                self.triangulation = None

    def __len__(self) -> int:
        return len(self.points)

    def weights(self, query: np.ndarray | torch.Tensor | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(view indices, weights summing to 1) for a target (yaw, pitch): the views of the enclosing triangle
        with their barycentric weights (those with a negligible weight left out), else the nearest view."""
        if torch.is_tensor(query):
            query = query.detach().cpu().double().numpy()
        q = np.asarray(query, dtype=np.float64).reshape(-1)[:2]
        simplex = -1 if self.triangulation is None else int(self.triangulation.find_simplex(q))
        if simplex >= 0:
            affine = self.triangulation.transform[simplex]
            b = affine[:2] @ (q - affine[2])
            bary = np.array([b[0], b[1], 1.0 - b.sum()])
            keep = bary > NEGLIGIBLE
            if keep.any():
                vertices = self.triangulation.simplices[simplex][keep]
                kept = bary[keep]
                return vertices.astype(np.int64), kept / kept.sum()
        nearest = int(np.argmin(((self.points - q) ** 2).sum(1)))
        return np.array([nearest], dtype=np.int64), np.ones(1)


def blend_views(reenactments: torch.Tensor, weights: np.ndarray | torch.Tensor | Sequence[float]) -> torch.Tensor:
    """K x ... reenactments of K views -> their weighted sum (...), weights as `ViewMap.weights` returns them."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64) if not torch.is_tensor(weights) else weights,
                        device=reenactments.device).to(reenactments.dtype)
    if w.ndim != 1 or len(w) != len(reenactments):
        raise ValueError(f"need one weight per reenactment: {tuple(w.shape)} weights, {len(reenactments)} images")
    if len(w) == 1:  # a single view is used as it is (its weight is 1)
        return reenactments[0]
    return torch.tensordot(w, reenactments, dims=1)
