"""Evaluation metrics of face swaps, by name (`swaplab.metrics.registry.METRICS`): id_retrieval, id_similarity,
pose_error, expression_error, shape_error, fid, and the reconstruction metrics lpips, ssim, psnr."""

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

__all__ = [
    "FID", "METRICS", "ExpressionError", "IDRetrieval", "IDSimilarity", "PoseError", "ReconstructionLPIPS",
    "ReconstructionPSNR", "ReconstructionSSIM", "ShapeError", "SwapMetric", "SwapMetrics", "SwapRecord",
    "build_metrics", "expert_lookup", "frechet_distance", "register_metric",
]
