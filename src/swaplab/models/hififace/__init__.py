from swaplab.models.hififace.generator import HifiFaceGenerator, HifiFaceResult, SemanticFacialFusion
from swaplab.models.hififace.identity import ShapeAwareIdentity, fuse_coefficients, shape_aware_identity
from swaplab.models.hififace.module import HifiFace

__all__ = ["HifiFace", "HifiFaceGenerator", "HifiFaceResult", "SemanticFacialFusion", "ShapeAwareIdentity",
           "fuse_coefficients", "shape_aware_identity"]
