from swaplab.models.fsgan.heatmaps import interpolate_views, interpolation_weights, landmark_heatmaps
from swaplab.models.fsgan.module import FSGAN
from swaplab.models.fsgan.pipeline import STAGES, FSGANGenerators

__all__ = ["FSGAN", "FSGANGenerators", "STAGES", "interpolate_views", "interpolation_weights", "landmark_heatmaps"]
