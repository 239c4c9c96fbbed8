"""Frozen pretrained networks ("experts") behind one interface, and the registry of their official files.

Importing this package registers every expert's weight entries (`python -m swaplab.experts` lists them).
"""

from swaplab.experts.arcface import ARCFACE_CROP, IdentityEncoder, IResNet
from swaplab.experts.base import Experts, FrozenExpert, check_box, crop_box, imagenet_normalize
from swaplab.experts.bfm import BFM, FaceCoefficients, shape_distance
from swaplab.experts.detection import Detections, DlibDetector, MTCNNDetector, align_faces, arcface_template
from swaplab.experts.dlib_models import (
    DlibFaceDescriptor,
    DlibLandmarks,
    dlib5_to_arcface,
    landmarks68_to_arcface,
)
from swaplab.experts.face3d import FaceReconstructor, ReconNet
from swaplab.experts.facenet import FACENET_CROP
from swaplab.experts.head_pose import HeadPose, Hopenet, angles_from_logits
from swaplab.experts.inception import FIDInceptionV3, InceptionFeatures
from swaplab.experts.irse import IRSE
from swaplab.experts.lighting import LightingFeatures, LightingNet
from swaplab.experts.parsing import CELEBAMASK_CLASSES, DEFAULT_GROUPS, BiSeNet, FaceParser
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
    MissingWeightsError,
    UnsafeCheckpointError,
    WeightEntry,
    load_pretrained,
    load_tensors,
    register_weights,
    resolve_weights,
    weights_report,
)

__all__ = [
    "ARCFACE_CROP", "FACENET_CROP", "IRSE", "LightingFeatures", "LightingNet", "check_box",
    "Detections", "DlibDetector", "DlibFaceDescriptor", "DlibLandmarks", "MTCNNDetector", "align_faces",
    "arcface_template", "dlib5_to_arcface", "landmarks68_to_arcface",
    "BFM", "CropLandmarkPose", "MEAN_FACE_68", "FaceCoefficients", "FaceReconstructor", "LandmarkPose", "ReconNet", "shape_distance",
    "CELEBAMASK_CLASSES", "DEFAULT_GROUPS", "FSGAN_LAYERS", "LPIPS", "PIX2PIX_LAYERS", "VGG_LOSS_WEIGHTS", "WEIGHTS",
    "BiSeNet", "Experts", "FaceParser", "FrozenExpert", "HeadPose", "Hopenet", "IResNet", "IdentityEncoder",
    "MissingWeightsError", "UnsafeCheckpointError", "VGGFeatures", "VGGNet", "WeightEntry", "angles_from_logits",
    "crop_box", "imagenet_normalize", "load_pretrained", "load_tensors", "register_weights", "resolve_weights",
    "vgg_layer_names", "weights_report", "FIDInceptionV3", "InceptionFeatures",
]
