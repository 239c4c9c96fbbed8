from swaplab.training.callbacks.image_grid import ImageGridLogger
from swaplab.training.callbacks.record_samples import RecordSamples
from swaplab.training.callbacks.swap_evaluation import SwapEvaluation

__all__ = ["ImageGridLogger", "RecordSamples", "SwapEvaluation"]
