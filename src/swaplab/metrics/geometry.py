"""Attribute and shape metrics: head pose error, 3DMM expression error, 3DMM identity (shape) error."""

from __future__ import annotations

from typing import Any

import torch

from swaplab.metrics.registry import SwapMetric, SwapRecord, cat_state, register_metric

ANGLES = ("yaw", "pitch", "roll")


@register_metric("pose_error")
class PoseError(SwapMetric):
    """Head pose error in degrees: the L2 norm of the (yaw, pitch, roll) difference per example, and the mean
    absolute error per angle. The pose of `image` (swap, or target to measure the estimator itself) is
    compared with the pose expert on the target (`reference: target`) or with the generator's ground truth
    `target_pose` (`reference: ground_truth`, synthetic data)."""

    role_args = ("pose_role",)
    higher_is_better = False

    def __init__(self, pose_role: str = "pose", reference: str = "target", image: str = "swap",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reference not in ("target", "ground_truth"):
            raise ValueError(f"pose_error reference must be 'target' or 'ground_truth', got {reference!r}")
        if image not in ("swap", "target", "reconstruction"):
            raise ValueError(f"pose_error image must be 'swap', 'target' or 'reconstruction', got {image!r}")
        self.pose_role, self.reference, self.image = pose_role, reference, image
        self.needs_reconstruction = image == "reconstruction"
        self.add_state("difference", default=[], dist_reduce_fx="cat")

    def update(self, record: SwapRecord) -> None:
        pose = self.run(record, "pose_role", self.image).float()
        if self.reference == "target":
            reference = self.run(record, "pose_role", "target").float()
        else:
            reference = record.ground_truth("target_pose").to(pose.device).float()
        self.difference.append(pose - reference)

    def compute(self) -> dict[str, torch.Tensor]:
        d = cat_state(self.difference)
        return {"": d.norm(dim=-1).mean(), **{a: d[:, i].abs().mean() for i, a in enumerate(ANGLES)}}

    def per_example(self) -> dict[str, torch.Tensor]:
        d = cat_state(self.difference)
        return {"": d.norm(dim=-1), **{a: d[:, i].abs() for i, a in enumerate(ANGLES)}}


AGGREGATES = ("mean", "rms")


class CoefficientError(SwapMetric):
    """L2 distance between one group of 3DMM coefficients (`field` of FaceCoefficients) of the swap and of
    the `reference` image, per example, aggregated over examples by `aggregate`: `mean` of the distances
    (HifiFace, SimSwap) or `rms`, the root of their mean square (the aggregation the evaluation issue attributes to
    ReliableSwap; check its evaluation code before setting numbers side by side)."""

    role_args = ("face3d_role",)
    higher_is_better = False
    field = ""
    reference = ""

    def __init__(self, face3d_role: str = "face3d", aggregate: str = "mean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if aggregate not in AGGREGATES:
            raise ValueError(f"{self.registered_name} aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}")
        self.face3d_role, self.aggregate = face3d_role, aggregate
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, record: SwapRecord) -> None:
        swap = getattr(self.run(record, "face3d_role", "swap"), self.field).float()
        reference = getattr(self.run(record, "face3d_role", self.reference), self.field).float()
        self.values.append((swap - reference).norm(dim=-1))

    def compute(self) -> dict[str, torch.Tensor]:
        values = cat_state(self.values)
        return {"": values.mean() if self.aggregate == "mean" else values.square().mean().sqrt()}

    def per_example(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values)}


@register_metric("expression_error")
class ExpressionError(CoefficientError):
    """L2 between the 3DMM expression coefficients (Deep3DFaceRecon: 64) of swap and target."""

    field, reference = "exp", "target"


@register_metric("shape_error")
class ShapeError(CoefficientError):
    """L2 between the 3DMM identity (shape) coefficients (Deep3DFaceRecon: 80) of swap and source (HifiFace)."""

    field, reference = "id", "source"
