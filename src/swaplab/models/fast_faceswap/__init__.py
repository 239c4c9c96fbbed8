from swaplab.models.fast_faceswap.module import FastFaceSwap
from swaplab.models.fast_faceswap.network import TransformationNet
from swaplab.models.fast_faceswap.postprocess import clone_face_back, parsing_mask
from swaplab.models.fast_faceswap.style_bank import StyleBank

__all__ = ["FastFaceSwap", "StyleBank", "TransformationNet", "parsing_mask", "clone_face_back"]
