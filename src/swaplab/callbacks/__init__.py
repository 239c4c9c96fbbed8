from swaplab.callbacks.image_grid import ImageGridLogger
from swaplab.callbacks.record_samples import RecordSamples

__all__ = ["ImageGridLogger", "RecordSamples"]
