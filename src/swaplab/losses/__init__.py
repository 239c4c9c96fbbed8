from swaplab.losses.adversarial import AdversarialLoss, r1_penalty
from swaplab.losses.terms import IdentityLoss, MultiLevelFeatureLoss, ReconstructionLoss, masked_mean
from swaplab.losses.weighted import WeightedSum

__all__ = ["AdversarialLoss", "IdentityLoss", "MultiLevelFeatureLoss", "ReconstructionLoss", "WeightedSum",
           "masked_mean", "r1_penalty"]
