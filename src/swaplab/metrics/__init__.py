"""Evaluation metrics of face swaps, by name (`swaplab.metrics.registry.METRICS`): id_retrieval, id_similarity,
pose_error, expression_error, shape_error, fid, the reconstruction metrics lpips, ssim, psnr, and against the
true swap of procedural pairs truth_image (psnr / ssim / l1 over the image or the face) and landmark_error.
Reference rows (copy_target, copy_source, true_swap): `swaplab.metrics.references`."""

from swaplab.metrics.build import build_metrics, expert_lookup
from swaplab.metrics.fid import FID, frechet_distance
from swaplab.metrics.geometry import ExpressionError, PoseError, ShapeError
from swaplab.metrics.identity import IDRetrieval, IDSimilarity
from swaplab.metrics.image import ReconstructionLPIPS, ReconstructionPSNR, ReconstructionSSIM
from swaplab.metrics.registry import (
    METRICS,
    SwapMetric,
    SwapMetrics,
    SwapRecord,
    register_metric,
)
from swaplab.metrics.truth import LandmarkError, TruthImage

__all__ = [
    "FID", "METRICS", "ExpressionError", "IDRetrieval", "IDSimilarity", "LandmarkError", "PoseError",
    "ReconstructionLPIPS", "ReconstructionPSNR", "ReconstructionSSIM", "ShapeError", "SwapMetric", "SwapMetrics",
    "SwapRecord", "TruthImage", "build_metrics", "expert_lookup", "frechet_distance", "register_metric",
]
