from swaplab.models.fsgan.generators import STAGES, FSGANGenerators
from swaplab.models.fsgan.heatmaps import interpolate_views, interpolation_weights, landmark_heatmaps
from swaplab.models.fsgan.module import FSGAN
from swaplab.models.fsgan.views import ViewMap, blend_views

__all__ = ["FSGAN", "FSGANGenerators", "STAGES", "ViewMap", "blend_views", "interpolate_views", "interpolation_weights",
           "landmark_heatmaps"]
