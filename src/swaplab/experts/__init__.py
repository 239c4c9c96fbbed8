"""Frozen pretrained networks ("experts") behind one interface, and the registry of their official files.

Importing this package registers every expert's weight entries (`python -m swaplab.experts` lists them).
"""

from swaplab.experts.arcface import ARCFACE_CROP, IdentityEncoder, IResNet
from swaplab.experts.base import Experts, FrozenExpert, imagenet_normalize
from swaplab.experts.bfm import BFM, FaceCoefficients, shape_distance
from swaplab.experts.detection import Detections, DlibDetector, MTCNNDetector
from swaplab.experts.dlib_models import DlibFaceDescriptor, DlibLandmarks
from swaplab.experts.face3d import FaceReconstructor, ReconNet
from swaplab.experts.facenet import FACENET_CROP
from swaplab.experts.head_pose import HeadPose, Hopenet, angles_from_logits
from swaplab.experts.hull_parsing import LandmarkHullParser
from swaplab.experts.inception import FIDInceptionV3, InceptionFeatures
from swaplab.experts.irse import IRSE
from swaplab.experts.lighting import LightingFeatures
from swaplab.experts.parsing import BiSeNet, FaceParser
from swaplab.experts.perceptual import (
    FSGAN_LAYERS,
    LPIPS,
    PIX2PIX_LAYERS,
    VGG_LOSS_WEIGHTS,
    VGGFeatures,
    VGGNet,
    vgg_layer_names,
)
from swaplab.experts.pnp_pose import MEAN_FACE_68, CropLandmarkPose, LandmarkPose
from swaplab.experts.registry import (
    WEIGHTS,
    WeightEntry,
    load_pretrained,
    load_tensors,
    register_weights,
    resolve_weights,
    weights_report,
)
from swaplab.experts.tddfa import TDDFA, TDDFAOutput

__all__ = [
    "ARCFACE_CROP", "BFM", "FACENET_CROP", "FSGAN_LAYERS", "IRSE", "LPIPS", "MEAN_FACE_68", "PIX2PIX_LAYERS",
    "VGG_LOSS_WEIGHTS", "WEIGHTS", "BiSeNet", "CropLandmarkPose", "Detections", "DlibDetector", "DlibFaceDescriptor",
    "DlibLandmarks", "Experts", "FIDInceptionV3", "FaceCoefficients", "FaceParser", "FaceReconstructor",
    "FrozenExpert", "HeadPose", "Hopenet", "IResNet", "IdentityEncoder", "InceptionFeatures", "LandmarkHullParser", "LandmarkPose",
    "LightingFeatures", "MTCNNDetector", "ReconNet", "TDDFA", "TDDFAOutput", "VGGFeatures", "VGGNet", "WeightEntry", "angles_from_logits",
    "imagenet_normalize", "load_pretrained", "load_tensors", "register_weights", "resolve_weights",
    "shape_distance", "vgg_layer_names", "weights_report",
]
