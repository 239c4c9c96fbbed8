from swaplab.callbacks.image_grid import ImageGridLogger
from swaplab.callbacks.record_samples import RecordSamples
from swaplab.callbacks.swap_evaluation import SwapEvaluation

__all__ = ["ImageGridLogger", "RecordSamples", "SwapEvaluation"]
