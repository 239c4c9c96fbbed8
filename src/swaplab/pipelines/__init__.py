"""Inference pipelines: full photos and videos in, swapped photos and videos out."""

from swaplab.pipelines.face_swap import FaceSwapPipeline, NoFaceError, SwapOptions
from swaplab.pipelines.video import swap_video

__all__ = ["FaceSwapPipeline", "NoFaceError", "SwapOptions", "swap_video"]
