from swaplab.models.faceshifter.aei_net import AADGenerator, AEINet, MultiLevelAttributeEncoder
from swaplab.models.faceshifter.module import FaceShifter

__all__ = ["AADGenerator", "AEINet", "FaceShifter", "MultiLevelAttributeEncoder"]
