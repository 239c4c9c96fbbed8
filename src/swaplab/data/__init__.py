from swaplab.data.datamodule import SwapDataModule
from swaplab.data.synthetic import SyntheticSwapDataset

__all__ = ["SwapDataModule", "SyntheticSwapDataset"]
