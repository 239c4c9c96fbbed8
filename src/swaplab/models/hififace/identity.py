"""HifiFace's 3D shape-aware identity extractor (Sec. 3.1): v_sid = concat(c_fuse, v_id)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from swaplab.experts import Experts, FaceCoefficients


class ShapeAwareIdentity(NamedTuple):
    v_sid: torch.Tensor  # (B, 257 + D) the generator's conditioning vector
    c_fuse: torch.Tensor  # (B, 257) source identity coefficients + target expression, pose and the rest
    v_id: torch.Tensor  # (B, D) unit-norm ArcFace embedding of the source


def fuse_coefficients(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 257) coefficient vectors -> c_fuse = cat(source[:, :80], target[:, 80:])."""
    fused = FaceCoefficients.fuse(FaceCoefficients.from_vector(source), FaceCoefficients.from_vector(target))
    return fused.to_vector()


@torch.no_grad()
def shape_aware_identity(experts: Experts, source: torch.Tensor, target: torch.Tensor) -> ShapeAwareIdentity:
    """v_sid from the run's shared experts (`face3d`: Deep3DFaceRecon, `identity`: ArcFace). A conditioning
    input: no gradient flows through it (the shape and identity losses supervise the outputs instead)."""
    c_source, c_target = experts.face3d(torch.cat([source, target])).to_vector().chunk(2)
    c_fuse = fuse_coefficients(c_source, c_target)
    v_id = experts.identity(source)
    return ShapeAwareIdentity(torch.cat([c_fuse, v_id.to(c_fuse.dtype)], dim=-1), c_fuse, v_id)
