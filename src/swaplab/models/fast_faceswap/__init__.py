from swaplab.models.fast_faceswap.module import FastFaceSwap
from swaplab.models.fast_faceswap.network import TransformationNet
from swaplab.models.fast_faceswap.postprocess import face_mask, paste_back
from swaplab.models.fast_faceswap.style_bank import StyleBank

__all__ = ["FastFaceSwap", "StyleBank", "TransformationNet", "face_mask", "paste_back"]
