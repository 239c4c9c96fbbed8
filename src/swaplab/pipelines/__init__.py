"""Inference pipelines: full photos and videos in, swapped photos and videos out."""

from swaplab.pipelines.face_swap import FaceCounts, FaceSwapPipeline, NoFaceError, SwapOptions
from swaplab.pipelines.video import swap_video

__all__ = ["FaceCounts", "FaceSwapPipeline", "NoFaceError", "SwapOptions", "swap_video"]
