"""Inference pipelines: full photos and videos in, swapped photos and videos out."""

from swaplab.pipelines.face_swap import FaceCounts, FaceSwapPipeline, NoFaceError, SourceViews, SwapOptions
from swaplab.pipelines.video import swap_video

__all__ = ["FaceCounts", "FaceSwapPipeline", "NoFaceError", "SourceViews", "SwapOptions", "swap_video"]
