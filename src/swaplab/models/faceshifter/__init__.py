from swaplab.models.faceshifter.aei_net import AADGenerator, AEINet, MultiLevelAttributeEncoder
from swaplab.models.faceshifter.hear_module import FaceShifterHEAR
from swaplab.models.faceshifter.hear_net import HEARNet
from swaplab.models.faceshifter.module import FaceShifter

__all__ = ["AADGenerator", "AEINet", "FaceShifter", "FaceShifterHEAR", "HEARNet", "MultiLevelAttributeEncoder"]
