from swaplab.models.fsgan.generators import STAGES, FSGANGenerators
from swaplab.models.fsgan.heatmaps import interpolate_views, interpolation_weights, landmark_heatmaps
from swaplab.models.fsgan.module import FSGAN

__all__ = ["FSGAN", "FSGANGenerators", "STAGES", "interpolate_views", "interpolation_weights", "landmark_heatmaps"]
